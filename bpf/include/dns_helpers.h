/* SPDX-License-Identifier: GPL-2.0 */
/* DNS message parsing shared by the XDP and TC programs. */
#ifndef DNS_HELPERS_H
#define DNS_HELPERS_H

#include "nexus_structs.h"
#include "csum.h"
#include "parsing_helpers.h"

struct dnshdr {
	__be16 id;
	__be16 flags;
	__be16 qdcount;
	__be16 ancount;
	__be16 nscount;
	__be16 arcount;
};

#ifndef NEXUS_MAX_EDNS_OPTIONS
#define NEXUS_MAX_EDNS_OPTIONS 8        /* EDNS options walked looking for ECS */
#endif
#define EDNS_OPT_HDR_LEN 4              /* option code + length */
#define NEXUS_MAX_EDNS_LEN 256          /* option bytes walked looking for ECS */
#define NEXUS_EDNS_LEN_MASK 511
#define NAME_MASK (NEXUS_NAME_BUF - 1)
#define NEXUS_MOVE_BUF 1024             /* >= NEXUS_MAX_HDR_OFF + DNS header + 255 + 4 */
#define NEXUS_MAX_LABELS_BUF 128        /* > DNS_MAX_LABELS, a power of two */
#define LABEL_MASK (NEXUS_MAX_LABELS_BUF - 1)
#define TEXT_MASK (NEXUS_PREFIX_MAX - 1)
/* The two policy hash lanes (nexusctl/policy/hashing.py mirrors these). */
#define POL_P1 0x100000001b3ULL         /* FNV-1a 64-bit prime */
#define POL_P2 0x9e3779b97f4a7c15ULL    /* odd golden-ratio multiplier */

/* What the parse of a query found. Lives in the per-CPU scratch map, not on
 * the stack: values read back from map memory are unknown to the verifier,
 * so the code after the QNAME loop is verified once rather than once per
 * possible name length. */
struct dns_q {
	__u32 q_sum;                    /* sum (csum.h) of the question bytes, from the DNS header on */
	__u16 name_len;                 /* wire length of the QNAME, root label included */
	__u16 qtype;                    /* host order */
	__u16 qclass;
	__u16 flags;                    /* the query's header flags, host order */
	__u16 udp_size;                 /* largest answer the client takes: 512 or its EDNS size */
	__u16 msg_len;                  /* DNS message length (UDP payload) */
	__u16 payload_off;              /* offset of the DNS header in the packet */
	__u8 has_opt;
	__u8 do_bit;
	__u8 has_ecs;
	__u8 labels;
	__u8 reg_off;                   /* registrable label: offset of its length byte in name */
	__u8 reg_len;
};

/* Per-CPU working memory for one packet (nexus_scratch map). */
struct nexus_scratch {
	__u8 name[NEXUS_NAME_BUF];      /* lower-cased wire-form QNAME, zero padded */
	struct nexus_cache_key key;
	struct dns_q q;
	/* The L2-L4 walk's result. Kept in map memory for the same reason as
	 * struct dns_q: read back, its offsets are unknown-but-bounded values,
	 * so the DNS stages are verified once, not once per header layout. */
	struct pkt_meta m;
	__u16 l3_off;                   /* copied from m for dns_reply() */
	__u16 l4_off;
	__u16 eth_proto;
	__u16 edns_udp_size;
	__u64 start_ns;
	struct nexus_cache_val synth;   /* a synthesized answer (block, slip, policy) */
	__u8 move_buf[NEXUS_MOVE_BUF];  /* headers + question, when an answer grows at the front */
	/* policy: per-label hashes made while parsing (policy.h combines them) */
	__u64 seed1;                    /* copied from nexus_pol_state before parsing */
	__u64 seed2;
	__u32 hash_labels;              /* make the label hashes (rules are loaded) */
	__u8 label_start[NEXUS_MAX_LABELS_BUF];
	__u64 label_h1[NEXUS_MAX_LABELS_BUF];
	__u64 label_h2[NEXUS_MAX_LABELS_BUF];
	__u8 text[NEXUS_PREFIX_MAX];    /* the name dotted, lower case: prefix rules match it */
	struct nexus_prefix_key pkey;   /* the LPM key built from text */
	struct nexus_policy_val pol;    /* the rule that decided */
};

/* Per-CPU scratch, one entry per program (maps named *_scratch are not
 * pinned or shared: each object gets its own). */
#ifndef NEXUS_SCRATCH_MAP
#define NEXUS_SCRATCH_MAP nexus_scratch
#endif
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nexus_scratch);
} NEXUS_SCRATCH_MAP SEC(".maps");

static __always_inline struct nexus_scratch *get_scratch(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&NEXUS_SCRATCH_MAP, &zero);
}

enum parse_result {
	PARSE_OK = 0,
	PARSE_MALFORMED,                /* breaks the protocol: counted, dropped or passed per config */
	PARSE_DOUBT,                    /* legal but not something we answer: pass to the resolver */
};

/* True when port is one of the configured DNS ports (53 when none is set). */
static __always_inline int is_dns_port(const struct nexus_config *cfg, __u16 port)
{
	int i, any = 0;

#pragma unroll
	for (i = 0; i < NEXUS_MAX_DNS_PORTS; i++) {
		if (cfg->dns_ports[i] == 0)
			continue;
		any = 1;
		if (cfg->dns_ports[i] == port)
			return 1;
	}
	return !any && port == DNS_PORT;
}

static __always_inline __u8 to_lower(__u8 c)
{
	return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

struct qname_walk {
	__u8 *qname;
	void *data_end;
	struct nexus_scratch *s;
	__u64 lh1;                      /* hash of the current label, two lanes */
	__u64 lh2;
	__u32 label_left;
	__u32 sum;
	int result;
};

/* One byte of the QNAME per call (bpf_loop: verified once, not per length). */
static long qname_step(__u32 i, struct qname_walk *w)
{
	__u8 *b = w->qname + bounded(i, NAME_MASK);
	__u8 c;

	if ((void *)(b + 1) > w->data_end) {
		w->result = PARSE_MALFORMED;
		return 1;
	}
	c = *b;
	/* the question starts at DNS offset 12: byte i sits at 12 + i */
	w->sum += (i & 1) ? c : (__u32)c << 8;
	if (w->label_left) {
		__u8 lc = to_lower(c);

		w->s->name[bounded(i, NAME_MASK)] = lc;
		if (i - 1 < NEXUS_PREFIX_MAX)
			w->s->text[bounded(i - 1, TEXT_MASK)] = lc;
		w->label_left--;
		if (w->s->hash_labels) {
			w->lh1 = (w->lh1 ^ lc) * POL_P1;
			w->lh2 = (w->lh2 ^ lc) * POL_P2;
			if (!w->label_left) {
				__u32 k = bounded(w->s->q.labels - 1, LABEL_MASK);

				w->s->label_h1[k] = w->lh1;
				w->s->label_h2[k] = w->lh2;
			}
		}
		return 0;
	}
	if (c == 0) {
		w->s->name[bounded(i, NAME_MASK)] = 0;
		w->s->q.name_len = i + 1;
		w->result = PARSE_OK;
		return 1;
	}
	if (c & DNS_LABEL_PTR_MASK) {
		w->result = PARSE_MALFORMED;          /* compression pointer or reserved label type */
		return 1;
	}
	w->s->name[bounded(i, NAME_MASK)] = c;
	if (i > 0 && i - 1 < NEXUS_PREFIX_MAX)
		w->s->text[bounded(i - 1, TEXT_MASK)] = '.';
	w->label_left = c;
	w->s->q.reg_off = w->s->q.reg_len;        /* the last two label starts */
	w->s->q.reg_len = i;
	w->s->label_start[bounded(w->s->q.labels, LABEL_MASK)] = i;
	w->s->q.labels += 1;
	if (w->s->hash_labels) {
		/* a label's hash starts from the seed and its length byte */
		w->lh1 = (w->s->seed1 ^ c) * POL_P1;
		w->lh2 = (w->s->seed2 ^ c) * POL_P2;
	}
	return 0;
}

/* Copy the QNAME at qname into s->name, lower-cased, checking labels <= 63,
 * name <= 255 and no compression (a question must not point elsewhere).
 * Also sums the bytes for the answer's checksum and notes where the
 * registrable label (the one left of the last) starts. */
static __always_inline int parse_qname(__u8 *qname, void *data_end, struct nexus_scratch *s)
{
	struct qname_walk w = { .qname = qname, .data_end = data_end, .s = s,
				.result = PARSE_MALFORMED };    /* no end within 255 bytes */

	bpf_loop(DNS_MAX_NAME, qname_step, &w, 0);
	s->q.q_sum = w.sum;
	return w.result;
}

/* The OPT record of a query: size, DO bit, ECS. Returns bytes consumed or -1. */
static __always_inline int parse_opt(__u8 *p, void *data_end, struct dns_q *q)
{
	__u16 rdlen, type, size;
	__u32 o;
	__u8 *opt;
	int i;

	if ((void *)(p + DNS_OPT_RR_LEN) > data_end)
		return -1;
	if (p[0] != 0)
		return -1;                            /* OPT owner must be the root */
	type = ((__u16)p[1] << 8) | p[2];
	if (type != DNS_TYPE_OPT)
		return -2;                            /* another record (TSIG...): not ours to answer */
	size = ((__u16)p[3] << 8) | p[4];
	q->udp_size = size < DNS_UDP_MIN_SIZE ? DNS_UDP_MIN_SIZE : size;
	q->do_bit = (p[7] & (EDNS_DO_BIT >> 8)) ? 1 : 0;
	rdlen = ((__u16)p[9] << 8) | p[10];
	for (i = 0, o = 0; i < NEXUS_MAX_EDNS_OPTIONS; i++) {
		__u16 code, len;

		if (o >= rdlen)
			break;
		if (o > NEXUS_MAX_EDNS_LEN)
			return -2;                    /* more options than we walk: not ours to answer */
		opt = p + DNS_OPT_RR_LEN + bounded(o, NEXUS_EDNS_LEN_MASK);
		if ((void *)(opt + EDNS_OPT_HDR_LEN) > data_end)
			return -1;
		code = ((__u16)opt[0] << 8) | opt[1];
		len = ((__u16)opt[2] << 8) | opt[3];
		if (code == EDNS_OPT_ECS)
			q->has_ecs = 1;
		o += EDNS_OPT_HDR_LEN + len;
	}
	return DNS_OPT_RR_LEN + rdlen;
}

/* Parse and check a query whose DNS header is at dns. Fills s->name and s->q. */
static __always_inline int parse_query(void *data, void *data_end, struct dnshdr *dns, __u32 payload_off,
				       __u32 payload_len, struct nexus_scratch *s)
{
	struct dns_q *q = &s->q;
	__u16 flags = bpf_ntohs(dns->flags);
	__u32 name_len, end, msg_end;
	__u8 *p;
	int r, n;

	__builtin_memset(s->name, 0, sizeof(s->name));
	__builtin_memset(q, 0, sizeof(*q));
	q->flags = flags;
	q->payload_off = payload_off;
	q->msg_len = payload_len;
	q->udp_size = DNS_UDP_MIN_SIZE;

	if ((flags & DNS_OPCODE_MASK) != 0)
		return PARSE_DOUBT;                   /* NOTIFY, UPDATE...: the resolver decides */
	if (dns->qdcount != bpf_htons(1) || dns->ancount || dns->nscount)
		return PARSE_MALFORMED;
	if (bpf_ntohs(dns->arcount) > 1)
		return PARSE_DOUBT;

	r = parse_qname((__u8 *)(dns + 1), data_end, s);
	if (r != PARSE_OK)
		return r;

	/* reload through map memory: one verifier path whatever the length */
	name_len = q->name_len;
	if (name_len > DNS_MAX_NAME)
		return PARSE_MALFORMED;
	p = (__u8 *)(dns + 1) + name_len;
	if ((void *)(p + DNS_QFIXED_LEN) > data_end)
		return PARSE_MALFORMED;
	q->qtype = ((__u16)p[0] << 8) | p[1];
	q->qclass = ((__u16)p[2] << 8) | p[3];
	/* qtype/qclass sit at DNS offset 12 + name_len */
	q->q_sum += csum_u16(q->qtype, name_len) + csum_u16(q->qclass, name_len + 2);
	/* during the walk reg_off/reg_len held the last two label starts */
	if (q->labels >= 2)
		q->reg_len = s->name[q->reg_off & NAME_MASK];
	else
		q->reg_len = 0;

	end = sizeof(*dns) + name_len + DNS_QFIXED_LEN;
	msg_end = payload_len;
	if (dns->arcount) {
		n = parse_opt(p + DNS_QFIXED_LEN, data_end, q);
		if (n == -2)
			return PARSE_DOUBT;
		if (n < 0)
			return PARSE_MALFORMED;
		q->has_opt = 1;
		end += n;
	}
	if (end > msg_end)
		return PARSE_MALFORMED;
	if (end < msg_end)
		return PARSE_DOUBT;                   /* trailing bytes: leave it to the resolver */
	return PARSE_OK;
}

#endif /* DNS_HELPERS_H */
