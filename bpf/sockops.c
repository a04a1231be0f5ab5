/* sockops: when a redirected connect completes, record its original destination under the
 * client's address, which is what ztunnel sees with getpeername() on the accepted socket. The
 * callback runs before the final ACK of the handshake leaves, so the entry exists before ztunnel
 * can accept the connection. */
#include <uapi/linux/bpf.h>
#include "maps.h"

int sockops(struct bpf_sock_ops *skops)
{
    if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB || skops->family != 2 /* AF_INET */)
        return 1;
    __u64 cookie = bpf_get_socket_cookie(skops);
    struct orig_dst *orig = pending_dst.lookup(&cookie);
    if (!orig)
        return 1;
    struct conn_key key = {.ip = skops->local_ip4, .port = skops->local_port};
    struct orig_dst value = *orig;
    orig_dst.update(&key, &value);
    pending_dst.delete(&cookie);
    count(CNT_RECORDED);
    return 1;
}
