/* The maps of meshlet's programs: one BPF module holds all programs, so they share these. */
#ifndef MESHLET_MAPS_H
#define MESHLET_MAPS_H

#include "meshlet.h"

BPF_HASH(enrolled, __u64, struct enroll_value, 16384);
BPF_TABLE("lru_hash", __u64, struct orig_dst, pending_dst, 65536);
BPF_TABLE("lru_hash", struct conn_key, struct orig_dst, orig_dst, 65536);
BPF_ARRAY(config, struct meshlet_config, 1);
BPF_ARRAY(counters, __u64, 8);
BPF_SOCKHASH(local_hops, struct hop_key, 65536);

/* counters: what the programs did, for the agent's status. */
#define CNT_REDIRECTED 0      /* outbound connects rewritten to 15001 */
#define CNT_RECORDED 1        /* original destinations handed to ztunnel by sockops */
#define CNT_STEERED 2         /* inbound SYNs assigned to 15006 */
#define CNT_NO_LISTENER 3     /* inbound SYNs of an enrolled pod with no 15006 listener (refused) */
#define CNT_HOPS 4            /* sockets of local hops put in the sockhash */
#define CNT_SHORTCUT 5        /* messages passed socket-to-socket by sk_msg */
#define CNT_RESET 6           /* inbound SYNs ztunnel could not take, answered with a RST */

#endif
