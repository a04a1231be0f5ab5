/* Shared by meshlet's BPF programs and mirrored by ctypes structs in meshlet_contracts/bpf_maps.py
 * (tests/unit/bpf checks sizes and offsets against this file). Addresses are in network byte order,
 * ports in host byte order unless a field says otherwise. */
#ifndef MESHLET_H
#define MESHLET_H

#define MESHLET_OUTBOUND_PORT 15001
#define MESHLET_INBOUND_PORT 15006
#define MESHLET_HBONE_PORT 15008
#define MESHLET_APP_MARK 0x111  /* SO_MARK of ztunnel's transparent sockets to apps (meshlet_contracts/ports.py) */

/* enrolled: which pod netns are captured. Key: the netns cookie. */
struct enroll_value {
    __u32 pod_ip;   /* the pod's IPv4 address: outbound connects are rewritten to pod_ip:15001 */
    __u32 flags;    /* reserved */
};

/* pending_dst: connect4 -> sockops hand-off, by socket cookie (the source port is not known yet). */
struct orig_dst {
    __u32 ip;
    __u16 port;
    __u16 pad;
};

/* orig_dst: what ztunnel reads for a connection accepted on 15001. Key: the client's address as
 * ztunnel sees it from getpeername() (the pod IP and the client's port). */
struct conn_key {
    __u32 ip;
    __u32 port;
};

/* local_hops: sockets of same-node hops between an app and ztunnel's 15001 (sockhash), keyed by the
 * socket's own view of its connection; ports in host byte order. */
struct hop_key {
    __u32 local_ip;
    __u32 remote_ip;
    __u32 local_port;
    __u32 remote_port;
};

/* config: one entry, written by the agent. */
#define MESHLET_FLAG_LOCAL_HOPS 1  /* sockops fills local_hops, so sk_msg short-circuits same-node hops */
struct meshlet_config {
    __u32 probe_ip;  /* kubelet probes come from here: never steered */
    __u32 flags;
};

#endif
