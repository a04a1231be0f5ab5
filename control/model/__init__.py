"""The mesh model: Kubernetes-shaped objects converted once, at the edge, into frozen dataclasses.

`fields` reads raw objects with typed accessors that name the offending field; `kube` converts the core
kinds (Namespace, Pod, Service, ServiceAccount); `security` converts AuthorizationPolicy and
PeerAuthentication; `traffic` converts TrafficPolicy; `mesh` derives what the node proxies need (workloads,
services with endpoints, policies) from the converted objects.
"""
