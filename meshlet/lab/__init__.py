"""The local cluster: network-namespace nodes and pods on one machine, playing kubelet, CNI and API server.

`plan` decides names and addresses (pure), `objects` turns a plan into Kubernetes-shaped objects,
`store` writes them where control reads them, `kernel` and `processes` make the netns, links, cgroups
and processes, `cluster` puts it together for `meshlet lab up|down`, and `app` is the sample HTTP app
every pod runs.
"""
