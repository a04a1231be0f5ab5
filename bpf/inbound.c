/* tc ingress on an enrolled pod's eth0: new inbound TCP connections are assigned to ztunnel's 15006
 * listener in the pod's netns (no NAT: the accepted socket's own address is the original
 * destination). Left alone: packets of connections that already have a socket, HBONE (15008, which
 * ztunnel serves itself), and the node's probes.
 * Fail closed, fast: a new connection that ztunnel cannot take (no 15006 listener: ztunnel is down or
 * not yet serving the pod) never reaches the app; its SYN is turned into the RST|ACK the kernel answers
 * a port nobody listens on with, and sent back, so the client is refused at once instead of waiting
 * for its SYN retries to time out. tc has no helper that sends a reset, and letting the SYN on to the
 * stack would hand it to the app's own listener: the packet itself becomes the reset. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include "maps.h"

#define BPF_TCP_LISTEN_STATE 10
#define FRAG_MORE 0x2000
#define FRAG_OFFSET 0x1fff
#define ETH_LEN 14
#define IP_LEN 20
#define TCP_OFF (ETH_LEN + IP_LEN)
#define TCP_CSUM_OFF (TCP_OFF + 16)
#define TCP_MAX_HDR 60
#define RESET_TTL 64

static __always_inline __u16 fold_csum(__s64 sum)
{
    __u32 s = (__u32)sum;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return (__u16)~s;
}

/* Answer the SYN in `skb` (no payload; its headers checked by the caller) with RST|ACK, as the kernel's
 * tcp_v4_send_reset would: the packet is rewritten in place and sent back out of the device it came in
 * on. The TCP checksum is updated, never recomputed: when the SYN came with a partial checksum (veth
 * from a local sender) the helpers know to change only its pseudo-header part. */
static __always_inline int reset_syn(struct __sk_buff *skb, struct ethhdr *eth, struct iphdr *ip,
                                     struct tcphdr *tcp)
{
    __u32 hdr_len = tcp->doff * 4;
    if (ip->ihl != IP_LEN / 4 || hdr_len < sizeof(struct tcphdr) || hdr_len > TCP_MAX_HDR ||
        bpf_ntohs(ip->tot_len) != IP_LEN + hdr_len)
        return TC_ACT_SHOT;  /* IP options, data (fast open) or odd headers: dropped, still never passed on */
    struct ethhdr reply_eth = {};
    __builtin_memcpy(reply_eth.h_dest, eth->h_source, ETH_ALEN);
    __builtin_memcpy(reply_eth.h_source, eth->h_dest, ETH_ALEN);
    reply_eth.h_proto = eth->h_proto;
    struct iphdr reply_ip = *ip;
    reply_ip.saddr = ip->daddr;
    reply_ip.daddr = ip->saddr;
    reply_ip.tot_len = bpf_htons(IP_LEN + sizeof(struct tcphdr));
    reply_ip.ttl = RESET_TTL;
    reply_ip.check = 0;
    reply_ip.check = fold_csum(bpf_csum_diff(0, 0, (__be32 *)&reply_ip, IP_LEN, 0));
    struct tcphdr reply_tcp = {};
    reply_tcp.source = tcp->dest;
    reply_tcp.dest = tcp->source;
    reply_tcp.ack_seq = bpf_htonl(bpf_ntohl(tcp->seq) + 1);  /* the SYN takes one sequence number */
    reply_tcp.doff = sizeof(struct tcphdr) / 4;
    reply_tcp.rst = 1;
    reply_tcp.ack = 1;
    reply_tcp.check = tcp->check;  /* updated below by the difference of the headers */

    __u32 old_tcp[TCP_MAX_HDR / 4] = {};
    if (bpf_skb_load_bytes(skb, TCP_OFF, old_tcp, hdr_len))
        return TC_ACT_SHOT;
    __s64 diff = bpf_csum_diff(old_tcp, hdr_len, (__be32 *)&reply_tcp, sizeof(reply_tcp), 0);
    if (diff < 0)
        return TC_ACT_SHOT;
    /* From here on eth, ip and tcp point into a packet that changes: only the copies above are used. */
    if (bpf_skb_change_tail(skb, TCP_OFF + sizeof(struct tcphdr), 0))
        return TC_ACT_SHOT;
    if (bpf_skb_store_bytes(skb, 0, &reply_eth, sizeof(reply_eth), 0) ||
        bpf_skb_store_bytes(skb, ETH_LEN, &reply_ip, IP_LEN, 0) ||
        bpf_skb_store_bytes(skb, TCP_OFF, &reply_tcp, sizeof(reply_tcp), 0))
        return TC_ACT_SHOT;
    /* The addresses only swap places, so the pseudo-header changes by the TCP length alone. */
    if (bpf_l4_csum_replace(skb, TCP_CSUM_OFF, 0, diff, 0) ||
        bpf_l4_csum_replace(skb, TCP_CSUM_OFF, bpf_htons(hdr_len), bpf_htons(sizeof(struct tcphdr)),
                            BPF_F_PSEUDO_HDR | sizeof(__u16)))
        return TC_ACT_SHOT;
    count(CNT_RESET);
    return bpf_redirect(skb->ifindex, 0);
}

int inbound(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
        return TC_ACT_OK;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end || ip->protocol != IPPROTO_TCP || ip->ihl < 5)
        return TC_ACT_OK;
    /* A fragment's TCP header cannot be read here (or is not there) and the stack would reassemble it
     * after this hook: TCP fragments (Linux sends TCP with DF) are dropped rather than let past capture. */
    if (ip->frag_off & bpf_htons(FRAG_MORE | FRAG_OFFSET))
        return TC_ACT_SHOT;
    /* IP options move the TCP header: a SYN carrying them must not slip past capture to the app. */
    struct tcphdr *tcp = (void *)ip + ip->ihl * 4;
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
        return reset_syn(skb, eth, ip, tcp);  /* fail closed: ztunnel is not there, nothing reaches the app */
    }
    long err = bpf_sk_assign(skb, listener, 0);
    bpf_sk_release(listener);
    if (err)
        return reset_syn(skb, eth, ip, tcp);
    count(CNT_STEERED);
    return TC_ACT_OK;
}
