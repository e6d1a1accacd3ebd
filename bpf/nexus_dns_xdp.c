// SPDX-License-Identifier: GPL-2.0
/* XDP ingress: the DNS fast path.
 *
 * Every packet arriving on a configured interface is classified. UDP DNS
 * queries to a configured port are parsed and checked (malformed ones are
 * counted, then dropped or passed as the config says), rate-limited per
 * client prefix, scored for DGA-likeness, and answered here when the answer
 * cache has them (XDP_TX). Everything else goes on to the resolver, stamped
 * so the TC egress program can measure how long the resolver took. DNS over
 * TCP and over TLS/QUIC (853) are counted by kind and left to the stack, as
 * is everything that is not DNS. On any doubt, the query goes to the resolver. */
#include "nexus_common.h"
#include "nexus_maps.h"
#include "parsing_helpers.h"
#include "dns_helpers.h"
#include "dns_reply.h"
#include "ratelimit.h"
#include "dga.h"
#include "policy.h"

static __always_inline int malformed(const struct nexus_config *cfg)
{
	count(NEXUS_CNT_MALFORMED);
	if (cfg->malformed_action == NEXUS_MALFORMED_PASS) {
		count(NEXUS_CNT_MALFORMED_PASSED);
		return XDP_PASS;
	}
	return XDP_DROP;
}

/* Remember when this query went to the resolver (TC egress matches it). */
static __always_inline void stamp_inflight(void *data, void *data_end, const struct pkt_meta *m,
					   const struct dnshdr *dns, __u64 now, __u8 no_cache)
{
	struct nexus_inflight_val val = { .ts_ns = now, .no_cache = no_cache };
	struct nexus_inflight_key key = {};
	__u8 *ip = pkt_ptr(data, m->l3_off);
	__u8 *src;
	int i;

	if (!ip)
		return;
	if (m->eth_proto == ETH_P_IP) {
		src = ip + IPV4_SADDR_OFF;
		if ((void *)(src + 4) > data_end)
			return;
		__builtin_memcpy(key.addr, src, 4);
		key.family = 4;
	} else {
		src = ip + IPV6_SADDR_OFF;
		if ((void *)(src + 16) > data_end)
			return;
#pragma unroll
		for (i = 0; i < 16; i++)
			key.addr[i] = src[i];
		key.family = 6;
	}
	key.port = bpf_htons(m->sport);
	key.id = dns->id;
	bpf_map_update_elem(&nexus_inflight, &key, &val, BPF_ANY);
}

/* A header-only answer: NXDOMAIN/REFUSED for a block, TC=1 for a slip. */
static __always_inline struct nexus_cache_val *synth_empty(struct nexus_scratch *s, __u16 flags, __u64 now)
{
	struct nexus_cache_val *v = &s->synth;

	v->inserted_ns = now;
	v->csum = 0;
	v->data_len = 0;
	v->flags = flags;
	v->ancount = 0;
	v->nscount = 0;
	v->arcount = 0;
	v->n_ttl = 0;
	return v;
}

/* REPLY_SENT, REPLY_UNTOUCHED (pass the query on) or REPLY_DAMAGED (drop). */
static __always_inline int answer(struct xdp_md *ctx, struct nexus_scratch *s, struct nexus_cache_val *v,
				  __u64 now)
{
	int r = dns_reply(ctx, s, v, now);

	if (r != REPLY_SENT)
		return r;
	count(NEXUS_CNT_ANSWERED_IN_KERNEL);
	record_latency(NEXUS_LAT_KERNEL, bpf_ktime_get_ns() - s->start_ns);
	return REPLY_SENT;
}

/* Refuse a query: NXDOMAIN, NODATA, REFUSED or silence, as the rule (kind)
 * or else the config says. */
static __always_inline int block(struct xdp_md *ctx, struct nexus_scratch *s, const struct nexus_config *cfg,
				 __u64 now, __u8 kind)
{
	__u16 rcode;

	count(NEXUS_CNT_BLOCKED);
	if (kind == NEXUS_BLK_DEFAULT)
		kind = cfg->block_response == NEXUS_BLOCK_DROP ? NEXUS_BLK_DROP :
		       cfg->block_response == NEXUS_BLOCK_REFUSED ? NEXUS_BLK_REFUSED : NEXUS_BLK_NXDOMAIN;
	if (kind == NEXUS_BLK_DROP)
		return XDP_DROP;
	rcode = kind == NEXUS_BLK_REFUSED ? DNS_RCODE_REFUSED :
		kind == NEXUS_BLK_NODATA ? DNS_RCODE_NOERROR : DNS_RCODE_NXDOMAIN;
	if (answer(ctx, s, synth_empty(s, DNS_FLAG_RA | rcode, now), now) != REPLY_SENT)
		return XDP_DROP;                      /* cannot answer, and it must not reach the resolver */
	return XDP_TX;
}

/* The cache key from the parsed question; 0 when the name is too long to cache. */
static __always_inline int cache_key(struct nexus_scratch *s)
{
	if (s->q.name_len > NEXUS_CACHE_NAME)
		return 0;
	__builtin_memcpy(s->key.name, s->name, NEXUS_CACHE_NAME);
	s->key.qtype = s->q.qtype;
	s->key.qclass = s->q.qclass;
	s->key.do_bit = s->q.do_bit;
	return 1;
}

SEC("xdp")
int nexus_dns_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	const struct nexus_config *cfg;
	struct nexus_cache_val *val;
	struct nexus_scratch *s;
	struct pkt_meta *m;
	struct dnshdr *dns;
	__u64 now, limited = 0;
	int l4, r;

	cfg = get_config();
	s = get_scratch();
	if (!cfg || !s)
		return XDP_PASS;
	count(NEXUS_CNT_PACKETS);

	m = &s->m;
	__builtin_memset(m, 0, sizeof(*m));
	l4 = parse_l2_l4(data, data_end, m);
	if (l4 == 0) {
		count(NEXUS_CNT_PASS_NON_DNS);
		return XDP_PASS;
	}
	if (m->dport == DNS_TLS_PORT) {
		count(NEXUS_CNT_PASS_ENCRYPTED);
		return XDP_PASS;
	}
	if (!is_dns_port(cfg, m->dport)) {
		if (is_dns_port(cfg, m->sport))
			count(NEXUS_CNT_PASS_RESPONSE);
		else
			count(NEXUS_CNT_PASS_NON_DNS);
		return XDP_PASS;
	}
	if (l4 == NEXUS_IPPROTO_TCP) {
		count(NEXUS_CNT_PASS_TCP);
		return XDP_PASS;
	}
	/* UDP to a DNS port from here on: only now is the clock worth reading. */
	now = bpf_ktime_get_ns();
	if (l4 < 0 || m->is_fragment)
		return malformed(cfg);

	dns = pkt_ptr(data, m->payload_off);
	if (!dns || (void *)(dns + 1) > data_end || m->payload_len < sizeof(*dns))
		return malformed(cfg);
	if (bpf_ntohs(dns->flags) & DNS_FLAG_QR) {
		count(NEXUS_CNT_PASS_RESPONSE);
		return XDP_PASS;
	}

	policy_prepare(s);
	r = parse_query(data, data_end, dns, m->payload_off, m->payload_len, s);
	if (r == PARSE_MALFORMED)
		return malformed(cfg);
	count(NEXUS_CNT_QUERIES);

	if (!rl_allow(data, data_end, m, cfg, now, &limited)) {
		count(NEXUS_CNT_RATE_LIMITED);
		/* dns_reply writes plain 20-byte IPv4 / 40-byte IPv6 headers: a
		 * query with IP options or extension headers gets no slip answer
		 * (its header lengths would be wrong), only the drop */
		if (r == PARSE_OK && !m->ip_has_options && cfg->rl_action == NEXUS_RL_SLIP &&
		    cfg->rl_slip_ratio && limited % cfg->rl_slip_ratio == 0) {
			s->l3_off = m->l3_off;
			s->l4_off = m->l4_off;
			s->eth_proto = m->eth_proto;
			s->edns_udp_size = cfg->edns_udp_size;
			s->start_ns = now;
			/* TC=1 with no records: an honest client retries over TCP */
			if (answer(ctx, s, synth_empty(s, DNS_FLAG_RA | DNS_FLAG_TC, now), now) == REPLY_SENT) {
				count(NEXUS_CNT_RATE_LIMIT_SLIPPED);
				return XDP_TX;
			}
		}
		return XDP_DROP;
	}

	if (r == PARSE_DOUBT || m->ip_has_options) {
		/* legal, but not a shape we answer here (opcode, TSIG, trailing
		 * data, IP options): the resolver decides */
		count(NEXUS_CNT_PASS_DOUBT);
		if (cfg->latency_enabled || s->q.has_ecs)
			stamp_inflight(data, data_end, m, dns, now, s->q.has_ecs);
		return XDP_PASS;
	}
	s->l3_off = m->l3_off;
	s->l4_off = m->l4_off;
	s->eth_proto = m->eth_proto;
	s->edns_udp_size = cfg->edns_udp_size;
	s->start_ns = now;

	/* policy first: it beats the cache (a cached name that becomes blocked is blocked) */
	switch (policy_lookup(s)) {
	case NEXUS_POL_BLOCK:
		count(NEXUS_CNT_POLICY_BLOCKED);
		return block(ctx, s, cfg, now, s->pol.block);
	case NEXUS_POL_SYNTHESIZE:
		count(NEXUS_CNT_POLICY_SYNTHESIZED);
		r = answer(ctx, s, synth_answer(s, cfg->synth_ttl, now), now);
		if (r == REPLY_SENT)
			return XDP_TX;
		if (r == REPLY_DAMAGED)
			return XDP_DROP;
		break;
	case NEXUS_POL_REDIRECT:
		if (((s->q.qtype == DNS_TYPE_A || s->q.qtype == DNS_TYPE_AAAA) &&
		     !pol_has_addr_for(&s->pol, s->q.qtype)) || s->q.qtype == DNS_TYPE_ANY) {
			/* the other family has no address to give: NODATA, so the
			 * real address does not leak around the redirect. ANY is
			 * answered here too (the rule's address): the resolver's ANY
			 * answer carries both families, and TC can rewrite only those
			 * the rule has an address for (it drops the answer otherwise) */
			count(NEXUS_CNT_POLICY_REDIRECTED);
			r = answer(ctx, s, synth_answer(s, cfg->synth_ttl, now), now);
			if (r == REPLY_SENT)
				return XDP_TX;
			if (r == REPLY_DAMAGED)
				return XDP_DROP;
		}
		/* the resolver answers; TC egress rewrites the address. Not from
		 * the cache: it holds the real answer. */
		goto to_resolver;
	case NEXUS_POL_ALLOW:
		count(NEXUS_CNT_POLICY_ALLOWED);
		goto allowed;
	}

	if (cfg->dga_mode != NEXUS_DGA_OFF && dga_score(s, cfg) >= cfg->dga_threshold) {
		count(NEXUS_CNT_SUSPICIOUS);
		if (cfg->dga_mode == NEXUS_DGA_BLOCK)
			return block(ctx, s, cfg, now, NEXUS_BLK_DEFAULT);
	}
allowed:

	if (cfg->cache_enabled && !s->q.has_ecs && cache_key(s)) {
		val = bpf_map_lookup_elem(&nexus_cache, &s->key);
		if (val && now >= val->expires_ns) {
			bpf_map_delete_elem(&nexus_cache, &s->key);
			count(NEXUS_CNT_CACHE_EXPIRED);
			val = 0;
		}
		if (val) {
			r = answer(ctx, s, val, now);
			if (r == REPLY_SENT) {
				count(NEXUS_CNT_CACHE_HITS);
				return XDP_TX;
			}
			if (r == REPLY_DAMAGED)
				return XDP_DROP;
			count(NEXUS_CNT_PASS_DOUBT);  /* too big for the client, or no room */
		}
		count(NEXUS_CNT_CACHE_MISSES);
	}

to_resolver:
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	dns = pkt_ptr(data, m->payload_off);
	/* stamped for the latency, and so TC knows an ECS query's answer is not cacheable */
	if ((cfg->latency_enabled || s->q.has_ecs) && dns && (void *)(dns + 1) <= data_end)
		stamp_inflight(data, data_end, m, dns, now, s->q.has_ecs);
	return XDP_PASS;
}


/* ---- the policy loader's helper ----
 * Bloom filters have no batch update: a million single updates from user space
 * are a million syscalls. nexusctl instead runs this program with
 * BPF_PROG_TEST_RUN on a buffer of keys (never attached to an interface): it
 * pushes them into the bloom filter in the idle generation's slot, a few
 * hundred keys per run. */
struct bloom_fill_hdr {
	__u32 gen;                      /* slot of nexus_pol_bloom to fill */
	__u32 count;                    /* keys that follow */
};

#define BLOOM_FILL_MAX 200              /* keys per run: 8 + 200 * 16 bytes fit a test-run buffer */

struct bloom_fill {
	struct xdp_md *ctx;
	void *bloom;
	__u32 count;
	__u32 pushed;
};

static long bloom_fill_step(__u32 i, struct bloom_fill *f)
{
	void *data = (void *)(long)f->ctx->data;
	void *data_end = (void *)(long)f->ctx->data_end;
	struct nexus_policy_key key, *k;

	if (i >= f->count)
		return 1;
	k = data + sizeof(struct bloom_fill_hdr) + bounded(i, 255) * sizeof(key);
	if ((void *)(k + 1) > data_end)
		return 1;
	key = *k;
	if (bpf_map_push_elem(f->bloom, &key, BPF_ANY) == 0)
		f->pushed++;
	return 0;
}

SEC("xdp")
int nexus_bloom_fill(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct bloom_fill_hdr *h = data;
	struct bloom_fill f = { .ctx = ctx };
	__u32 gen;

	if ((void *)(h + 1) > data_end)
		return XDP_ABORTED;
	gen = h->gen & (POL_GENERATIONS - 1);
	f.bloom = bpf_map_lookup_elem(&nexus_pol_bloom, &gen);
	if (!f.bloom)
		return XDP_ABORTED;
	f.count = h->count < BLOOM_FILL_MAX ? h->count : BLOOM_FILL_MAX;
	bpf_loop(BLOOM_FILL_MAX, bloom_fill_step, &f, 0);
	h->count = f.pushed;            /* read back from the test run's output buffer */
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
