/* sk_msg on `local_hops`: what one end of a same-node app <-> ztunnel hop sends goes straight into the
 * other end's receive queue, skipping both TCP stacks. The peer is found by the mirrored key; when it is
 * not there (not yet, or gone) the message takes the normal path: this is an acceleration, never a
 * condition for the connection to work. */
#include <uapi/linux/bpf.h>
#include "maps.h"

int local_hop(struct sk_msg_md *msg)
{
    struct hop_key peer = {
        .local_ip = msg->remote_ip4,
        .remote_ip = msg->local_ip4,
        .local_port = bpf_ntohl(msg->remote_port),
        .remote_port = msg->local_port,
    };
    int verdict = local_hops.msg_redirect_hash(msg, &peer, BPF_F_INGRESS);
    if (verdict == SK_PASS)
        count(CNT_SHORTCUT);
    return SK_PASS;
}
