/* SPDX-License-Identifier: GPL-2.0 */
/* DNS policy lookup: which rule, if any, decides a query.
 *
 * Exact ("name") and wildcard ("*.name") rules live in a hash map keyed by
 * a 128-bit hash of the pattern; a name is checked by hashing each of its
 * suffixes from the top label down (the per-label hashes were made while
 * parsing), one lookup per label, so the cost does not grow with the number
 * of rules. A bloom filter in front answers "certainly not" for most
 * suffixes without touching the big hash table. Prefix rules ("ads.*") are
 * in an LPM trie over the dotted name, whose entries user space has already
 * resolved to the best rule along their prefix chain.
 *
 * Rule sets are swapped whole: each map here is an array of two inner maps,
 * user space builds the new set in the idle slot and flips nexus_pol_state's
 * gen, one 4-byte write, so a query sees either the old set or the new one.
 * Precedence (the contract): lower priority wins; then the longer pattern;
 * then allow. An allow is honoured only after its pattern is compared byte
 * for byte with the name, so a crafted hash collision cannot unblock a name. */
#ifndef NEXUS_POLICY_H
#define NEXUS_POLICY_H

#include "nexus_maps.h"
#include "dns_helpers.h"
#include "parsing_helpers.h"

#ifndef NEXUS_POLICY_MAX
#define NEXUS_POLICY_MAX 2097152        /* config: policy.max_rules */
#endif
#ifndef NEXUS_PREFIX_RULES_MAX
#define NEXUS_PREFIX_RULES_MAX 65536
#endif
#ifndef NEXUS_ALLOW_MAX
#define NEXUS_ALLOW_MAX 65536           /* allow rules (verified byte for byte) */
#endif
#define POL_BLOOM_HASHES 3
#define POL_GENERATIONS 2
#define POL_SUFFIX_TAG 0x5f5f7375ULL    /* "__su": starts the suffix fold */

struct pol_rules_inner {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, NEXUS_POLICY_MAX);
	__type(key, struct nexus_policy_key);
	__type(value, struct nexus_policy_val);
};

struct pol_bloom_inner {
	__uint(type, BPF_MAP_TYPE_BLOOM_FILTER);
	__uint(max_entries, NEXUS_POLICY_MAX);
	__uint(map_extra, POL_BLOOM_HASHES);
	__type(value, struct nexus_policy_key);
};

struct pol_prefix_inner {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, NEXUS_PREFIX_RULES_MAX);
	__type(key, struct nexus_prefix_key);
	__type(value, struct nexus_policy_val);
};

/* Exact and wildcard rules, per generation. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, POL_GENERATIONS);
	__type(key, __u32);
	__array(values, struct pol_rules_inner);
} nexus_pol_rules SEC(".maps");

/* Bloom filter of the rule keys, per generation. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, POL_GENERATIONS);
	__type(key, __u32);
	__array(values, struct pol_bloom_inner);
} nexus_pol_bloom SEC(".maps");

/* Prefix rules, per generation. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, POL_GENERATIONS);
	__type(key, __u32);
	__array(values, struct pol_prefix_inner);
} nexus_pol_prefix SEC(".maps");

/* The live generation and the hash seeds. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nexus_policy_state);
} nexus_pol_state SEC(".maps");

/* Allow rules' patterns, to confirm an allow before honouring it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, NEXUS_ALLOW_MAX);
	__type(key, struct nexus_policy_key);
	__type(value, struct nexus_policy_verify);
} nexus_pol_verify SEC(".maps");

static __always_inline const struct nexus_policy_state *policy_state(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&nexus_pol_state, &zero);
}

/* Call before parse_qname: makes it hash the labels when rules are loaded. */
static __always_inline void policy_prepare(struct nexus_scratch *s)
{
	const struct nexus_policy_state *ps = policy_state();

	if (ps && ps->active) {
		s->seed1 = ps->seed1;
		s->seed2 = ps->seed2;
		s->hash_labels = 1;
	} else {
		s->hash_labels = 0;
	}
}

static __always_inline __u64 pol_mix(__u64 h, __u64 x, __u64 p)
{
	h = (h ^ x) * p;
	return h ^ (h >> 32);
}

static __always_inline __u64 pol_final(__u64 h, __u64 kind, __u64 p)
{
	h = (h ^ kind) * p;
	return h ^ (h >> 29);
}

/* Query type → bit in nexus_policy_val.qtypes (nexusctl/policy/rules.py QTYPE_BITS). */
static __always_inline __u16 qtype_bit(__u16 qtype)
{
	switch (qtype) {
	case DNS_TYPE_A: return 1 << 0;
	case DNS_TYPE_NS: return 1 << 1;
	case DNS_TYPE_CNAME: return 1 << 2;
	case DNS_TYPE_SOA: return 1 << 3;
	case DNS_TYPE_PTR: return 1 << 4;
	case DNS_TYPE_MX: return 1 << 5;
	case DNS_TYPE_TXT: return 1 << 6;
	case DNS_TYPE_AAAA: return 1 << 7;
	case DNS_TYPE_SRV: return 1 << 8;
	case 43: return 1 << 9;         /* DS */
	case 48: return 1 << 10;        /* DNSKEY */
	case 64: return 1 << 11;        /* SVCB */
	case DNS_TYPE_HTTPS: return 1 << 12;
	case 257: return 1 << 13;       /* CAA */
	case DNS_TYPE_ANY: return 1 << 14;
	default: return 1 << 15;        /* every other type */
	}
}

/* Is a better than b? (priority, then pattern length, then allow) */
static __always_inline int pol_better(const struct nexus_policy_val *a, __u16 b_prio, __u16 b_len, __u8 b_action)
{
	if (b_action == NEXUS_POL_NONE)
		return 1;
	if (a->priority != b_prio)
		return a->priority < b_prio;
	if (a->pat_len != b_len)
		return a->pat_len > b_len;
	return a->action == NEXUS_POL_ALLOW && b_action != NEXUS_POL_ALLOW;
}

struct pol_walk {
	struct nexus_scratch *s;
	void *rules;
	void *bloom;
	__u64 h1;
	__u64 h2;
	__u32 nlabels;
	__u16 qbit;
	/* best non-allow match, copied into s->pol at the end */
	struct nexus_policy_val best;
	/* best allow match, and where its suffix starts (verified afterwards) */
	struct nexus_policy_val allow;
	struct nexus_policy_key allow_key;
	__u32 allow_from;
};

static __always_inline void pol_consider(struct pol_walk *w, const struct nexus_policy_val *v,
					 const struct nexus_policy_key *key, __u32 from)
{
	if (!(v->qtypes & w->qbit))
		return;
	if (v->action == NEXUS_POL_ALLOW) {
		if (pol_better(v, w->allow.priority, w->allow.pat_len, w->allow.action)) {
			w->allow = *v;
			w->allow_key = *key;
			w->allow_from = from;
		}
		return;
	}
	if (pol_better(v, w->best.priority, w->best.pat_len, w->best.action))
		w->best = *v;
}

/* One label per call, from the top label (the last) down to the first. */
static long pol_step(__u32 i, struct pol_walk *w)
{
	struct nexus_policy_key key;
	struct nexus_policy_val *v;
	__u32 k;
	__u64 kind;

	if (i >= w->nlabels)
		return 1;
	k = bounded(w->nlabels - 1 - i, LABEL_MASK);
	w->h1 = pol_mix(w->h1, w->s->label_h1[k], POL_P1);
	w->h2 = pol_mix(w->h2, w->s->label_h2[k], POL_P2);
	/* the whole name can match an exact rule; a proper suffix a wildcard */
	kind = k == 0 ? NEXUS_POL_EXACT : NEXUS_POL_WILDCARD;
	key.h1 = pol_final(w->h1, kind, POL_P1);
	key.h2 = pol_final(w->h2, kind, POL_P2);
	if (w->bloom && bpf_map_peek_elem(w->bloom, &key) != 0)
		return 0;                               /* certainly no rule */
	v = bpf_map_lookup_elem(w->rules, &key);
	if (v)
		pol_consider(w, v, &key, w->s->label_start[k]);
	return 0;
}

struct verify_walk {
	const struct nexus_scratch *s;
	const struct nexus_policy_verify *pv;
	__u32 from;
	int same;
};

static long verify_step(__u32 i, struct verify_walk *w)
{
	if (i >= w->pv->len)
		return 1;
	if (w->s->name[bounded(w->from + i, NAME_MASK)] != w->pv->wire[bounded(i, NAME_MASK)]) {
		w->same = 0;
		return 1;
	}
	return 0;
}

/* The pattern stored for an allow rule equals the name's suffix at from. */
static __always_inline int allow_verified(const struct nexus_scratch *s, const struct nexus_policy_key *key,
					  __u32 from)
{
	struct verify_walk vw = { .s = s, .from = from, .same = 1 };

	vw.pv = bpf_map_lookup_elem(&nexus_pol_verify, key);
	if (!vw.pv || vw.pv->len == 0 || vw.pv->len > DNS_MAX_NAME)
		return 0;
	if (from + vw.pv->len != s->q.name_len)
		return 0;
	bpf_loop(DNS_MAX_NAME, verify_step, &vw, 0);
	return vw.same;
}

/* Look the parsed query up; the deciding rule lands in s->pol (action NONE: no rule). */
static __always_inline int policy_lookup(struct nexus_scratch *s)
{
	const struct nexus_policy_state *ps = policy_state();
	struct nexus_prefix_key *pkey = &s->pkey;
	struct pol_walk w = {};
	void *prefix;
	__u32 gen, tl;

	s->pol.action = NEXUS_POL_NONE;
	if (!ps || !ps->active || !s->hash_labels)
		return NEXUS_POL_NONE;
	gen = ps->gen & (POL_GENERATIONS - 1);
	w.s = s;
	w.qbit = qtype_bit(s->q.qtype);
	w.nlabels = s->q.labels;
	w.rules = bpf_map_lookup_elem(&nexus_pol_rules, &gen);
	w.bloom = bpf_map_lookup_elem(&nexus_pol_bloom, &gen);
	w.h1 = s->seed1 ^ POL_SUFFIX_TAG;
	w.h2 = s->seed2 ^ POL_SUFFIX_TAG;
	if (w.rules && w.nlabels > 0)
		bpf_loop(DNS_MAX_LABELS, pol_step, &w, 0);

	/* prefix rules: the longest matching prefix carries its chain's best rule */
	prefix = bpf_map_lookup_elem(&nexus_pol_prefix, &gen);
	tl = s->q.name_len >= 2 ? s->q.name_len - 2 : 0;     /* dotted length */
	if (prefix && tl > 0) {
		struct nexus_policy_val *v;
		struct nexus_policy_key none = {};

		if (tl > NEXUS_PREFIX_MAX)
			tl = NEXUS_PREFIX_MAX;
		pkey->prefixlen = tl * 8;
		__builtin_memcpy(pkey->data, s->text, NEXUS_PREFIX_MAX);
		v = bpf_map_lookup_elem(prefix, pkey);
		if (v && v->action != NEXUS_POL_ALLOW)
			pol_consider(&w, v, &none, 0);
		else if (v && (v->qtypes & w.qbit) &&
			 pol_better(v, w.best.priority, w.best.pat_len, w.best.action))
			/* a prefix allow is exact by construction (no hashing): no verify */
			w.best = *v;
	}

	if (w.allow.action == NEXUS_POL_ALLOW &&
	    pol_better(&w.allow, w.best.priority, w.best.pat_len, w.best.action) &&
	    allow_verified(s, &w.allow_key, w.allow_from))
		w.best = w.allow;
	s->pol = w.best;
	return w.best.action;
}

/* Does the rule have an address for this query type? (A: addr4, AAAA: addr6,
 * ANY: either; other types: none, so they get NODATA from synthesize.) */
static __always_inline int pol_has_addr_for(const struct nexus_policy_val *p, __u16 qtype)
{
	if (qtype == DNS_TYPE_A)
		return p->has4;
	if (qtype == DNS_TYPE_AAAA)
		return p->has6;
	if (qtype == DNS_TYPE_ANY)
		return p->has4 || p->has6;
	return 0;
}

/* A synthesized answer for the query: an A or AAAA record for the rule's
 * address when it has one for the query type; otherwise no records (NODATA). */
static __always_inline struct nexus_cache_val *synth_answer(struct nexus_scratch *s, __u32 ttl, __u64 now)
{
	struct nexus_cache_val *v = &s->synth;
	const struct nexus_policy_val *p = &s->pol;
	__u16 qtype = s->q.qtype, rtype, alen, i;
	__u64 sum;

	v->inserted_ns = now;
	v->flags = DNS_FLAG_AA | DNS_FLAG_RA;
	v->ancount = 0;
	v->nscount = 0;
	v->arcount = 0;
	v->n_ttl = 0;
	v->data_len = 0;
	v->csum = 0;
	if (!pol_has_addr_for(p, qtype))
		return v;
	if (qtype == DNS_TYPE_AAAA || (qtype == DNS_TYPE_ANY && !p->has4)) {
		rtype = DNS_TYPE_AAAA;
		alen = 16;
	} else {
		rtype = DNS_TYPE_A;
		alen = 4;
	}
	/* owner: a pointer to the question's name at offset 12 */
	v->data[0] = 0xc0;
	v->data[1] = sizeof(struct dnshdr);
	v->data[2] = rtype >> 8;
	v->data[3] = rtype & 0xff;
	v->data[4] = 0;
	v->data[5] = DNS_CLASS_IN;
	v->data[6] = 0;                 /* TTL: written aged by dns_reply */
	v->data[7] = 0;
	v->data[8] = 0;
	v->data[9] = 0;
	v->data[10] = 0;
	v->data[11] = alen;
	sum = 0xc000 + sizeof(struct dnshdr) + rtype + DNS_CLASS_IN + alen;
	if (alen == 16) {
#pragma unroll
		for (i = 0; i < 16; i += 2) {
			v->data[12 + i] = p->addr6[i];
			v->data[13 + i] = p->addr6[i + 1];
			sum += ((__u64)p->addr6[i] << 8) | p->addr6[i + 1];
		}
	} else {
#pragma unroll
		for (i = 0; i < 4; i += 2) {
			v->data[12 + i] = p->addr4[i];
			v->data[13 + i] = p->addr4[i + 1];
			sum += ((__u64)p->addr4[i] << 8) | p->addr4[i + 1];
		}
	}
	v->data_len = DNS_RR_FIXED_LEN + 2 + alen;
	v->ttl_off[0] = 6;
	v->ttl_orig[0] = ttl;
	v->n_ttl = 1;
	v->ancount = 1;
	v->csum = csum_fold(sum);
	return v;
}

#endif /* NEXUS_POLICY_H */
