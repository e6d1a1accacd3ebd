/* SPDX-License-Identifier: GPL-2.0 */
/* Per-client-prefix rate limiting with GCRA (a token bucket kept as one
 * timestamp): each query moves the client's "theoretical arrival time" one
 * interval (1/rate) later; a client may run at most burst intervals ahead of
 * now. One u64 per client, no division on the packet path. The LRU value is
 * shared between CPUs and updated without a lock: two CPUs racing on one
 * client can each let a query through, a tolerance of one query. */
#ifndef NEXUS_RATELIMIT_H
#define NEXUS_RATELIMIT_H

#include "nexus_maps.h"
#include "parsing_helpers.h"

#define IPV4_SADDR_OFF 12               /* in struct iphdr */
#define IPV6_SADDR_OFF 8                /* in struct ipv6hdr */

static __always_inline __u8 prefix_mask(__u32 prefix, __u32 byte)
{
	__u32 bits = byte * 8;

	if (prefix >= bits + 8)
		return 0xff;
	if (prefix <= bits)
		return 0;
	return (__u8)(0xff << (8 - (prefix - bits)));
}

/* Fill key with the client's address masked to the configured prefix. */
static __always_inline int rl_key(void *data, void *data_end, const struct pkt_meta *m,
				  const struct nexus_config *cfg, struct nexus_rl_key *key)
{
	__u8 *ip = pkt_ptr(data, m->l3_off);
	__u32 i, len, prefix;
	__u8 *src;

	if (!ip)
		return -1;
	if (m->eth_proto == ETH_P_IP) {
		src = ip + IPV4_SADDR_OFF;
		len = 4;
		prefix = cfg->rl_v4_prefix ? cfg->rl_v4_prefix : 32;
		key->family = 4;
	} else {
		src = ip + IPV6_SADDR_OFF;
		len = 16;
		prefix = cfg->rl_v6_prefix ? cfg->rl_v6_prefix : 64;
		key->family = 6;
	}
	key->prefix = prefix;
#pragma unroll
	for (i = 0; i < 16; i++) {
		if (i >= len)
			break;
		if ((void *)(src + i + 1) > data_end)
			return -1;
		key->addr[i] = src[i] & prefix_mask(prefix, i);
	}
	return 0;
}

/* 1: allowed; 0: over the limit (*limited = how many so far for this client). */
static __always_inline int rl_allow(void *data, void *data_end, const struct pkt_meta *m,
				    const struct nexus_config *cfg, __u64 now, __u64 *limited)
{
	struct nexus_rl_key key = {};
	struct nexus_rl_state *st, fresh = {};
	__u64 interval = cfg->rl_interval_ns, tat;

	if (!cfg->rl_enabled || !interval)
		return 1;
	if (rl_key(data, data_end, m, cfg, &key))
		return 1;
	st = bpf_map_lookup_elem(&nexus_ratelimit, &key);
	if (!st) {
		fresh.tat_ns = now + interval;
		bpf_map_update_elem(&nexus_ratelimit, &key, &fresh, BPF_ANY);
		return 1;
	}
	tat = st->tat_ns > now ? st->tat_ns : now;
	if (tat + interval - now > cfg->rl_burst_ns) {
		st->limited += 1;
		*limited = st->limited;
		return 0;
	}
	st->tat_ns = tat + interval;
	return 1;
}

#endif /* NEXUS_RATELIMIT_H */
