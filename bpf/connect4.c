/* cgroup/connect4: an enrolled pod's outbound TCP connect goes to ztunnel's 15001 in that pod's netns.
 *
 * Attached once to the cgroup that holds the node's pods; which pods are enrolled is the `enrolled`
 * map (by netns cookie), so one program serves every pod and enrolling is a map update. The original
 * destination waits in `pending_dst` under the socket cookie until sockops knows the source port. */
#include <uapi/linux/bpf.h>
#include "maps.h"

#define MESHLET_SOCK_STREAM 1  /* the kernel's socket headers do not compile in a BPF unit */
#define MESHLET_AF_INET 2

int connect4(struct bpf_sock_addr *ctx)
{
    if (ctx->type != MESHLET_SOCK_STREAM || ctx->family != MESHLET_AF_INET)
        return 1;
    __u64 netns = bpf_get_netns_cookie(ctx);
    struct enroll_value *pod = enrolled.lookup(&netns);
    if (!pod)
        return 1;
    __u32 dst = ctx->user_ip4;
    /* In-pod traffic (loopback, or the pod's own address) is not the mesh's business. */
    if ((bpf_ntohl(dst) >> 24) == 127 || dst == pod->pod_ip)
        return 1;
    __u64 cookie = bpf_get_socket_cookie(ctx);
    struct orig_dst orig = {.ip = dst, .port = bpf_ntohs((__u16)ctx->user_port)};
    pending_dst.update(&cookie, &orig);
    ctx->user_ip4 = pod->pod_ip;
    ctx->user_port = bpf_htons(MESHLET_OUTBOUND_PORT);
    count(CNT_REDIRECTED);
    return 1;
}
