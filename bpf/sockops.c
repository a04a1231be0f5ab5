/* sockops: two jobs at connection establishment.
 * - A connect that connect4 redirected completes: record its original destination under the client's
 *   address, which is what ztunnel sees with getpeername() on the accepted socket. The callback runs
 *   before the handshake's final ACK leaves, so the entry exists before ztunnel can accept.
 * - Both ends of a same-node hop between an app and ztunnel (see is_local_hop) go into the
 *   `local_hops` sockhash, where `local_hop` (sk_msg) passes data socket to socket.
 * Attached to the cgroup above both the pods and ztunnel: the passive end is ztunnel's socket. */
#include <uapi/linux/bpf.h>
#include "maps.h"

#define MESHLET_SOL_SOCKET 1
#define MESHLET_SO_MARK 36

/* A same-node hop: app <-> ztunnel's 15001 in the source pod (same IP both ends), or ztunnel's
 * transparent connection to the app in the destination pod (both ends carry the app mark: ztunnel's
 * socket by SO_MARK, the app's by tcp_fwmark_accept). */
static __always_inline int is_local_hop(struct bpf_sock_ops *skops, __u32 remote_port)
{
    if (skops->local_ip4 == skops->remote_ip4 &&
        (skops->local_port == MESHLET_OUTBOUND_PORT || remote_port == MESHLET_OUTBOUND_PORT))
        return 1;
    int mark = 0;
    if (bpf_getsockopt(skops, MESHLET_SOL_SOCKET, MESHLET_SO_MARK, &mark, sizeof(mark)) != 0)
        return 0;
    return (mark & 0xfff) == MESHLET_APP_MARK;
}

static __always_inline void remember_hop(struct bpf_sock_ops *skops)
{
    /* Off unless the agent turns it on (config flag): a message redirected into a socket's receive
     * queue is not held to that socket's receive buffer, so a slow reader makes the kernel buffer
     * whatever the sender sends (measured: 19 MB for one connection). */
    int zero = 0;
    struct meshlet_config *cfg = config.lookup(&zero);
    if (!cfg || !(cfg->flags & MESHLET_FLAG_LOCAL_HOPS))
        return;
    __u32 remote_port = bpf_ntohl(skops->remote_port);
    if (!is_local_hop(skops, remote_port))
        return;
    struct hop_key key = {
        .local_ip = skops->local_ip4,
        .remote_ip = skops->remote_ip4,
        .local_port = skops->local_port,
        .remote_port = remote_port,
    };
    /* As a statement of its own: bcc's rewriter mangles these map calls inside expressions. */
    int err = local_hops.sock_hash_update(skops, &key, BPF_NOEXIST);
    if (err == 0)
        count(CNT_HOPS);
}

int sockops(struct bpf_sock_ops *skops)
{
    if (skops->family != 2 /* AF_INET */)
        return 1;
    if (skops->op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB) {
        remember_hop(skops);
        return 1;
    }
    if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
        return 1;
    __u64 cookie = bpf_get_socket_cookie(skops);
    struct orig_dst *orig = pending_dst.lookup(&cookie);
    if (orig) {
        struct conn_key key = {.ip = skops->local_ip4, .port = skops->local_port};
        struct orig_dst value = *orig;
        orig_dst.update(&key, &value);
        pending_dst.delete(&cookie);
        count(CNT_RECORDED);
    }
    remember_hop(skops);
    return 1;
}
