/* tc ingress on an enrolled pod's eth0: new inbound TCP connections are assigned to ztunnel's 15006
 * listener in the pod's netns (no NAT: the accepted socket's own address is the original
 * destination). Left alone: packets of connections that already have a socket, HBONE (15008, which
 * ztunnel serves itself), and the node's probes. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include "maps.h"

#define BPF_TCP_LISTEN_STATE 10

int inbound(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
        return TC_ACT_OK;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end || ip->protocol != IPPROTO_TCP || ip->ihl != 5)
        return TC_ACT_OK;
    struct tcphdr *tcp = (void *)(ip + 1);
    if ((void *)(tcp + 1) > data_end)
        return TC_ACT_OK;
    if (tcp->dest == bpf_htons(MESHLET_HBONE_PORT) || tcp->dest == bpf_htons(MESHLET_INBOUND_PORT))
        return TC_ACT_OK;
    int zero = 0;
    struct meshlet_config *cfg = config.lookup(&zero);
    if (cfg && cfg->probe_ip == ip->saddr)
        return TC_ACT_OK;

    struct bpf_sock_tuple tuple = {};
    tuple.ipv4.saddr = ip->saddr;
    tuple.ipv4.daddr = ip->daddr;
    tuple.ipv4.sport = tcp->source;
    tuple.ipv4.dport = tcp->dest;
    struct bpf_sock *sk = bpf_skc_lookup_tcp(skb, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
    if (sk) {
        int listening = sk->state == BPF_TCP_LISTEN_STATE;
        bpf_sk_release(sk);
        if (!listening)
            return TC_ACT_OK;  /* an existing connection (ztunnel's, or one it accepted): normal path */
    }
    if (!tcp->syn || tcp->ack)
        return TC_ACT_OK;  /* not a new connection, and nobody has it: the stack answers as usual */
    tuple.ipv4.dport = bpf_htons(MESHLET_INBOUND_PORT);
    struct bpf_sock *listener = bpf_sk_lookup_tcp(skb, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
    if (!listener) {
        count(CNT_NO_LISTENER);
        return TC_ACT_SHOT;  /* fail closed: ztunnel is not there, nothing reaches the app around it */
    }
    long err = bpf_sk_assign(skb, listener, 0);
    bpf_sk_release(listener);
    if (err)
        return TC_ACT_SHOT;
    count(CNT_STEERED);
    return TC_ACT_OK;
}
