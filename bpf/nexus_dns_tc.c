// SPDX-License-Identifier: GPL-2.0
/* TC egress: the local resolver's answers on their way out.
 *
 * Each answer is matched to its query (stamped at XDP ingress) for the
 * resolver-path latency, and cacheable answers (NOERROR/NXDOMAIN, complete,
 * no EDNS Client Subnet, records that fit) fill the answer cache that the
 * XDP program serves from. The packet itself always goes out unchanged. */
#define NEXUS_SCRATCH_MAP nexus_tc_scratch
#include "nexus_common.h"
#include "nexus_maps.h"
#include "parsing_helpers.h"
#include "dns_helpers.h"
#include "csum.h"
#include "policy.h"

#ifndef NEXUS_MAX_NAME_STEPS
#define NEXUS_MAX_NAME_STEPS 128        /* labels walked in a record's owner name */
#endif
#define RR_WALK_MAX (NEXUS_CACHE_MAX_RR + 1)   /* records walked: the cacheable ones and an OPT */
#define CACHE_DATA_MASK (NEXUS_CACHE_DATA - 1)
#define CACHEABLE_RFLAGS (DNS_FLAG_AA | DNS_FLAG_RA | DNS_FLAG_AD | DNS_RCODE_MASK)
#define NS_PER_SEC 1000000000ULL
#define MAX_PULL 2048                   /* bytes of a packet made linear for parsing */

struct rr_walk {
	struct __sk_buff *skb;
	struct nexus_cache_val *v;
	__u32 dns_off;                  /* DNS header offset in the packet */
	__u32 off;                      /* next record, from the DNS header */
	__u32 msg_len;
	__u32 data_start;               /* first byte after the question */
	__u32 data_stop;                /* where cached bytes stop (the OPT record, or the end) */
	__u32 nrec;
	__u32 ar_first;                 /* index of the first additional record */
	__u32 min_ttl;
	__u8 do_bit;
	__u8 has_ecs;
	__u8 bad;                       /* not cacheable */
	__u8 opt_seen;
};

/* Skip the owner name of the record at *off (labels, possibly ending in a
 * pointer). Shared by the cache walk and the redirect rewrite. */
static __always_inline int skip_name(struct __sk_buff *skb, __u32 dns_off, __u32 *off, __u32 msg_len)
{
	__u8 b;
	int i;

	for (i = 0; i < NEXUS_MAX_NAME_STEPS; i++) {
		if (*off >= msg_len || bpf_skb_load_bytes(skb, dns_off + *off, &b, 1))
			return -1;
		if (b == 0) {
			*off += 1;
			return 0;
		}
		if ((b & DNS_LABEL_PTR_MASK) == DNS_LABEL_PTR_MASK) {
			*off += 2;
			return 0;
		}
		if (b & DNS_LABEL_PTR_MASK)
			return -1;
		*off += 1 + b;
	}
	return -1;
}

/* One record per call (bpf_loop). */
static long rr_step(__u32 i, struct rr_walk *w)
{
	__u8 fx[DNS_RR_FIXED_LEN];
	__u16 type, rdlen;
	__u32 ttl, rec_start;

	if (i >= w->nrec)
		return 1;
	rec_start = w->off;
	if (skip_name(w->skb, w->dns_off, &w->off, w->msg_len)) {
		w->bad = 1;
		return 1;
	}
	if (w->off + DNS_RR_FIXED_LEN > w->msg_len ||
	    bpf_skb_load_bytes(w->skb, w->dns_off + w->off, fx, sizeof(fx))) {
		w->bad = 1;
		return 1;
	}
	type = ((__u16)fx[0] << 8) | fx[1];
	ttl = ((__u32)fx[4] << 24) | ((__u32)fx[5] << 16) | ((__u32)fx[6] << 8) | fx[7];
	rdlen = ((__u16)fx[8] << 8) | fx[9];
	if (type == DNS_TYPE_OPT) {
		/* must be the last record, in the additional section */
		if (i < w->ar_first || i + 1 != w->nrec || w->opt_seen) {
			w->bad = 1;
			return 1;
		}
		w->opt_seen = 1;
		w->do_bit = (fx[6] & (EDNS_DO_BIT >> 8)) ? 1 : 0;
		w->data_stop = rec_start;
		/* look for ECS among the options */
		{
			__u32 o = w->off + DNS_RR_FIXED_LEN, end = o + rdlen;
			__u8 oh[4];
			int k;

			for (k = 0; k < NEXUS_MAX_EDNS_OPTIONS; k++) {
				if (o + sizeof(oh) > end)
					break;
				if (bpf_skb_load_bytes(w->skb, w->dns_off + o, oh, sizeof(oh)))
					break;
				if ((((__u16)oh[0] << 8) | oh[1]) == EDNS_OPT_ECS)
					w->has_ecs = 1;
				o += sizeof(oh) + (((__u16)oh[2] << 8) | oh[3]);
			}
		}
	} else {
		__u32 n = w->v->n_ttl;

		if (n >= NEXUS_CACHE_MAX_RR) {
			w->bad = 1;
			return 1;
		}
		/* TTL position within the cached bytes */
		w->v->ttl_off[bounded(n, NEXUS_CACHE_MAX_RR - 1)] = w->off + 4 - w->data_start;
		w->v->ttl_orig[bounded(n, NEXUS_CACHE_MAX_RR - 1)] = ttl;
		w->v->n_ttl = n + 1;
		if (ttl < w->min_ttl)
			w->min_ttl = ttl;
	}
	w->off += DNS_RR_FIXED_LEN + rdlen;
	if (w->off > w->msg_len) {
		w->bad = 1;
		return 1;
	}
	return 0;
}

struct rewrite_walk {
	struct __sk_buff *skb;
	const struct nexus_policy_val *pol;
	__u32 dns_off;
	__u32 csum_off;                 /* UDP checksum offset in the packet */
	__u32 off;
	__u32 msg_len;
	__u32 nrec;
	__u32 done;
	__u8 bad;
};

/* One answer record per call: A (or AAAA) data becomes the rule's address,
 * the TTL is kept, the UDP checksum follows each 4-byte change. */
static long rewrite_step(__u32 i, struct rewrite_walk *w)
{
	__u8 fx[DNS_RR_FIXED_LEN];
	__u16 type, rdlen, want_len;
	__u32 j;

	if (i >= w->nrec)
		return 1;
	if (skip_name(w->skb, w->dns_off, &w->off, w->msg_len) || w->off + DNS_RR_FIXED_LEN > w->msg_len ||
	    bpf_skb_load_bytes(w->skb, w->dns_off + w->off, fx, sizeof(fx))) {
		w->bad = 1;
		return 1;
	}
	type = ((__u16)fx[0] << 8) | fx[1];
	rdlen = ((__u16)fx[8] << 8) | fx[9];
	w->off += DNS_RR_FIXED_LEN;
	want_len = 0;
	if (type == DNS_TYPE_A && w->pol->has4 && rdlen == 4)
		want_len = 4;
	else if (type == DNS_TYPE_AAAA && w->pol->has6 && rdlen == 16)
		want_len = 16;
	if (want_len && w->off + rdlen <= w->msg_len) {
		for (j = 0; j < 16; j += 4) {
			__be32 old_w, new_w;

			if (j >= want_len)
				break;
			if (bpf_skb_load_bytes(w->skb, w->dns_off + w->off + j, &old_w, 4))
				return 1;
			if (want_len == 4)
				__builtin_memcpy(&new_w, w->pol->addr4, 4);
			else
				__builtin_memcpy(&new_w, &w->pol->addr6[j & 12], 4);
			bpf_l4_csum_replace(w->skb, w->csum_off, old_w, new_w, BPF_F_MARK_MANGLED_0 | 4);
			bpf_skb_store_bytes(w->skb, w->dns_off + w->off + j, &new_w, 4, 0);
		}
		w->done++;
	}
	w->off += rdlen;
	return 0;
}

static __always_inline int rewrite_answers(struct __sk_buff *skb, struct nexus_scratch *s, struct dnshdr *dns)
{
	struct rewrite_walk w = {};

	w.skb = skb;
	w.pol = &s->pol;
	w.dns_off = s->m.payload_off;
	w.csum_off = s->m.l4_off + offsetof(struct udphdr, check);
	w.off = sizeof(*dns) + s->q.name_len + DNS_QFIXED_LEN;
	w.msg_len = s->m.payload_len;
	w.nrec = bpf_ntohs(dns->ancount);
	bpf_loop(RR_WALK_MAX, rewrite_step, &w, 0);
	return w.done;
}

/* Sum (csum.h) of the cached bytes with their TTL fields zeroed. */
static __always_inline __u32 data_sum(struct nexus_cache_val *v, __u32 len)
{
	__u32 i, n = v->n_ttl;
	__s64 w;
	__u32 padded = (len + 3) & ~3U;

	for (i = 0; i < NEXUS_CACHE_MAX_RR; i++) {
		__u32 off;

		if (i >= n)
			break;
		off = v->ttl_off[i];
		if (off + 4 > len)
			return 0;
		v->data[bounded(off, CACHE_DATA_MASK)] = 0;
		v->data[bounded(off + 1, CACHE_DATA_MASK)] = 0;
		v->data[bounded(off + 2, CACHE_DATA_MASK)] = 0;
		v->data[bounded(off + 3, CACHE_DATA_MASK)] = 0;
	}
	/* zero the pad bytes bpf_csum_diff reads beyond len */
	for (i = len; i < padded; i++)
		v->data[bounded(i, CACHE_DATA_MASK)] = 0;
	if (padded == 0 || padded > NEXUS_CACHE_DATA)
		return 0;
	w = bpf_csum_diff(0, 0, (__be32 *)v->data, padded, 0);
	if (w < 0)
		return 0;
	/* bpf_csum_diff adds host-order (little-endian) words: swap to the
	 * big-endian sum csum.h keeps */
	return swab16(csum_fold((__u64)(__u32)w));
}

/* The answer's question (the response repeats the query's): into s->name and
 * s->q, with the label hashes the policy lookup needs. */
static __always_inline int parse_response_question(struct __sk_buff *skb, struct nexus_scratch *s,
						   struct dnshdr *dns, void *data_end)
{
	__u8 qf[DNS_QFIXED_LEN];
	__u32 name_len;

	if (dns->qdcount != bpf_htons(1))
		return -1;
	__builtin_memset(s->name, 0, sizeof(s->name));
	__builtin_memset(&s->q, 0, sizeof(s->q));
	policy_prepare(s);
	if (parse_qname((__u8 *)(dns + 1), data_end, s) != PARSE_OK)
		return -1;
	name_len = s->q.name_len;
	if (name_len > DNS_MAX_NAME)
		return -1;
	if (bpf_skb_load_bytes(skb, s->m.payload_off + sizeof(*dns) + name_len, qf, sizeof(qf)))
		return -1;
	s->q.qtype = ((__u16)qf[0] << 8) | qf[1];
	s->q.qclass = ((__u16)qf[2] << 8) | qf[3];
	return 0;
}

static __always_inline void fill_cache(struct __sk_buff *skb, struct nexus_scratch *s,
				       const struct nexus_config *cfg, struct dnshdr *dns, __u64 now)
{
	struct nexus_cache_val *v = &s->synth;
	struct rr_walk w = {};
	__u16 flags = bpf_ntohs(dns->flags), rcode = flags & DNS_RCODE_MASK;
	__u32 name_len, data_len, ttl;

	if ((flags & (DNS_OPCODE_MASK | DNS_FLAG_TC)) ||
	    (rcode != DNS_RCODE_NOERROR && rcode != DNS_RCODE_NXDOMAIN))
		goto skip;
	name_len = s->q.name_len;
	if (name_len > NEXUS_CACHE_NAME)
		goto skip;
	s->key.qtype = s->q.qtype;
	s->key.qclass = s->q.qclass;
	__builtin_memcpy(s->key.name, s->name, NEXUS_CACHE_NAME);

	v->n_ttl = 0;
	w.skb = skb;
	w.v = v;
	w.dns_off = s->m.payload_off;
	w.msg_len = s->m.payload_len;
	w.data_start = sizeof(*dns) + name_len + DNS_QFIXED_LEN;
	w.data_stop = w.msg_len;
	w.off = w.data_start;
	w.nrec = bpf_ntohs(dns->ancount) + bpf_ntohs(dns->nscount) + bpf_ntohs(dns->arcount);
	w.ar_first = bpf_ntohs(dns->ancount) + bpf_ntohs(dns->nscount);
	w.min_ttl = 0xffffffff;
	if (w.nrec == 0 || w.nrec > RR_WALK_MAX)
		goto skip;
	bpf_loop(RR_WALK_MAX, rr_step, &w, 0);
	if (w.bad || w.has_ecs || w.off != w.msg_len || v->n_ttl == 0)
		goto skip;
	if (w.data_stop <= w.data_start)
		goto skip;
	data_len = w.data_stop - w.data_start;
	if (data_len == 0 || data_len > NEXUS_CACHE_DATA)
		goto skip;
	ttl = w.min_ttl;
	if (ttl < cfg->cache_min_ttl || ttl == 0)
		goto skip;
	if (cfg->cache_max_ttl && ttl > cfg->cache_max_ttl)
		ttl = cfg->cache_max_ttl;

	if (bpf_skb_load_bytes(skb, s->m.payload_off + w.data_start, v->data, data_len))
		goto skip;
	v->data_len = data_len;
	v->csum = data_sum(v, data_len);
	v->inserted_ns = now;
	v->expires_ns = now + (__u64)ttl * NS_PER_SEC;
	v->flags = flags & CACHEABLE_RFLAGS;
	v->ancount = bpf_ntohs(dns->ancount);
	v->nscount = bpf_ntohs(dns->nscount);
	v->arcount = bpf_ntohs(dns->arcount) - w.opt_seen;
	s->key.do_bit = w.do_bit;
	if (bpf_map_update_elem(&nexus_cache, &s->key, v, BPF_ANY) == 0) {
		count(NEXUS_CNT_CACHE_INSERTS);
		return;
	}
skip:
	count(NEXUS_CNT_CACHE_SKIPPED);
}

/* Find the answer's query, stamped at ingress: the resolver-path latency,
 * and whether the query forbade caching. Returns 1 when it must not be cached. */
static __always_inline int match_inflight(void *data, void *data_end, const struct pkt_meta *m,
					  const struct dnshdr *dns, const struct nexus_config *cfg, __u64 now)
{
	struct nexus_inflight_key key = {};
	struct nexus_inflight_val *t;
	__u8 *ip = pkt_ptr(data, m->l3_off);
	int i, no_cache;

	if (!ip)
		return 0;
	if (m->eth_proto == ETH_P_IP) {
		struct iphdr *iph = (void *)ip;

		if ((void *)(iph + 1) > data_end)
			return 0;
		__builtin_memcpy(key.addr, &iph->daddr, 4);
		key.family = 4;
	} else {
		struct ipv6hdr *ip6 = (void *)ip;

		if ((void *)(ip6 + 1) > data_end)
			return 0;
#pragma unroll
		for (i = 0; i < 16; i++)
			key.addr[i] = ((__u8 *)&ip6->daddr)[i];
		key.family = 6;
	}
	key.port = bpf_htons(m->dport);
	key.id = dns->id;
	t = bpf_map_lookup_elem(&nexus_inflight, &key);
	if (!t) {
		if (cfg->latency_enabled)
			count(NEXUS_CNT_LATENCY_UNMATCHED);
		return 0;
	}
	no_cache = t->no_cache;
	if (cfg->latency_enabled && now > t->ts_ns)
		record_latency(NEXUS_LAT_RESOLVER, now - t->ts_ns);
	bpf_map_delete_elem(&nexus_inflight, &key);
	return no_cache;
}

SEC("tc")
int nexus_dns_tc(struct __sk_buff *skb)
{
	const struct nexus_config *cfg;
	struct nexus_scratch *s;
	struct pkt_meta *m;
	struct dnshdr *dns;
	void *data, *data_end;
	__u64 now;
	int l4, no_cache;

	cfg = get_config();
	s = get_scratch();
	if (!cfg || !s)
		return TC_ACT_OK;
	count(NEXUS_CNT_TC_PACKETS);
	if (skb->len <= MAX_PULL)
		bpf_skb_pull_data(skb, skb->len);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	now = bpf_ktime_get_ns();

	m = &s->m;
	__builtin_memset(m, 0, sizeof(*m));
	l4 = parse_l2_l4(data, data_end, m);
	if (l4 != NEXUS_IPPROTO_UDP || !is_dns_port(cfg, m->sport) || m->is_fragment)
		return TC_ACT_OK;

	dns = pkt_ptr(data, m->payload_off);
	if (!dns || (void *)(dns + 1) > data_end) {
		count(NEXUS_CNT_TC_MALFORMED);
		return TC_ACT_OK;
	}
	if (!(bpf_ntohs(dns->flags) & DNS_FLAG_QR))
		return TC_ACT_OK;
	count(NEXUS_CNT_TC_RESPONSES);

	no_cache = match_inflight(data, data_end, m, dns, cfg, now);
	if (parse_response_question(skb, s, dns, data_end)) {
		if (cfg->cache_enabled)
			count(NEXUS_CNT_CACHE_SKIPPED);
		return TC_ACT_OK;
	}
	if (policy_lookup(s) == NEXUS_POL_REDIRECT) {
		/* rewritten answers are never cached: the rule may go away */
		if (rewrite_answers(skb, s, dns) > 0)
			count(NEXUS_CNT_POLICY_REDIRECTED);
		return TC_ACT_OK;
	}
	if (cfg->cache_enabled && !no_cache)
		fill_cache(skb, s, cfg, dns, now);
	else if (cfg->cache_enabled)
		count(NEXUS_CNT_CACHE_SKIPPED);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
