"""Redirection backends: how an enrolled pod's TCP traffic is steered into ztunnel's listeners inside
that pod's netns. `iptables` (rules in the pod netns) now; `ebpf` (bcc programs) comes later."""
