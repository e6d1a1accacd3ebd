/* SPDX-License-Identifier: GPL-2.0 */
/* Structs and enums that user space reads or writes.
 *
 * nexusctl never mirrors these by hand: it reads their layout from the BTF
 * of the compiled objects (nexusctl/tools/btf.py), so a field added here is
 * seen by `maps dump`, `stats` and the config writer without a Python edit.
 * Keep fixed-width types and explicit padding so the layout is the same for
 * every compiler.
 */
#ifndef NEXUS_STRUCTS_H
#define NEXUS_STRUCTS_H

#include "nexus_consts.h"

/* Per-CPU counters, one slot each in nexus_counters. User space strips the
 * NEXUS_CNT_ prefix and lower-cases the rest to name them, so a counter is
 * named after its cause. */
enum nexus_counter {
	NEXUS_CNT_PACKETS = 0,          /* every packet the XDP program saw */
	NEXUS_CNT_QUERIES,              /* well-formed UDP DNS queries */
	NEXUS_CNT_BLOCKED,              /* queries refused by policy or DGA */
	NEXUS_CNT_RATE_LIMITED,         /* queries over the client's bucket */
	NEXUS_CNT_RATE_LIMIT_SLIPPED,   /* ...of those, answered with TC=1 */
	NEXUS_CNT_MALFORMED,            /* failed a parse check */
	NEXUS_CNT_SUSPICIOUS,           /* DGA score over the threshold */
	NEXUS_CNT_CACHE_HITS,
	NEXUS_CNT_CACHE_MISSES,
	NEXUS_CNT_CACHE_EXPIRED,        /* hit an entry past its TTL, removed */
	NEXUS_CNT_ANSWERED_IN_KERNEL,   /* XDP_TX answers of any kind */
	NEXUS_CNT_PASS_NON_DNS,
	NEXUS_CNT_PASS_TCP,             /* DNS over TCP, left to the stack */
	NEXUS_CNT_PASS_ENCRYPTED,       /* DNS over TLS (853), left to the stack */
	NEXUS_CNT_PASS_RESPONSE,        /* DNS responses arriving on ingress */
	NEXUS_CNT_PASS_DOUBT,           /* could answer but something was odd */
	NEXUS_CNT_MALFORMED_PASSED,     /* malformed, passed per config */
	NEXUS_CNT_TC_PACKETS,           /* every packet the TC program saw */
	NEXUS_CNT_TC_RESPONSES,         /* DNS responses leaving the host */
	NEXUS_CNT_TC_MALFORMED,         /* responses that failed a parse check */
	NEXUS_CNT_CACHE_INSERTS,
	NEXUS_CNT_CACHE_SKIPPED,        /* response not cacheable (size, rcode, ECS, ...) */
	NEXUS_CNT_POLICY_BLOCKED,
	NEXUS_CNT_POLICY_REDIRECTED,
	NEXUS_CNT_POLICY_SYNTHESIZED,
	NEXUS_CNT_POLICY_ALLOWED,
	NEXUS_CNT_LATENCY_UNMATCHED,    /* response without a stamped query */
	NEXUS_CNT__MAX,
};

/* Runtime settings, one entry in nexus_config, written by `up`/`apply`.
 * Zero means "off" or "default" for every field, so a fresh map is safe. */
struct nexus_config {
	__u16 dns_ports[NEXUS_MAX_DNS_PORTS]; /* host order; 0 = unused slot */
	__u8 malformed_action;          /* enum nexus_malformed_action */
	__u8 rl_enabled;
	__u8 rl_action;                 /* enum nexus_rl_action */
	__u8 rl_v4_prefix;              /* client prefix length a bucket covers */
	__u8 rl_v6_prefix;
	__u8 dga_mode;                  /* enum nexus_dga_mode */
	__u8 dga_min_len;               /* registrable labels shorter than this score 0 */
	__u8 cache_enabled;
	__u8 latency_enabled;
	__u8 block_response;            /* enum nexus_block_response */
	__u16 dga_threshold;            /* 0..1000 */
	__u16 edns_udp_size;            /* UDP size we advertise in in-kernel answers */
	__u16 pad0;
	__u32 rl_slip_ratio;            /* slip: every Nth limited query gets TC=1 */
	__u32 cache_min_ttl;            /* seconds; answers below are not cached */
	__u32 cache_max_ttl;            /* seconds; cached entries live at most this */
	__u32 synth_ttl;                /* TTL of synthesized answers */
	__u64 rl_interval_ns;           /* 1e9 / rate: time one query costs */
	__u64 rl_burst_ns;              /* interval * burst: how far ahead a client may run */
};

/* DNS latency, query to answer, in log2 buckets of nanoseconds: bucket i
 * counts durations in [2^i, 2^(i+1)) ns (bucket 0 also takes 0 and 1 ns).
 * One entry per path in nexus_latency (a per-CPU array). */
#define NEXUS_LAT_BUCKETS 32
enum nexus_lat_path {
	NEXUS_LAT_KERNEL = 0,           /* answered in XDP: parse to XDP_TX */
	NEXUS_LAT_RESOLVER = 1,         /* query seen at XDP ingress to answer at TC egress */
	NEXUS_LAT__MAX,
};

struct nexus_latency {
	__u64 buckets[NEXUS_LAT_BUCKETS];
	__u64 count;
	__u64 sum_ns;
};

/* Per-process figures (LRU hash nexus_procs keyed by tgid), shared by the
 * metrics tracepoints, the certificate observer and the enforcer. Values are
 * shared between CPUs: update with __sync_fetch_and_add. */
struct nexus_proc_stats {
	char comm[16];
	__u64 dns_queries;              /* DNS sends (to a DNS port) */
	__u64 cert_validations;         /* server certificates parsed in a TLS handshake */
	__u64 tls_connections;          /* TCP connections to 443 established */
	__u64 dns_denied;               /* DNS sends refused (or audited) by the enforcer */
	__u64 last_seen_ns;
};

enum nexus_rl_action {
	NEXUS_RL_DROP = 0,
	NEXUS_RL_SLIP = 1,
};

enum nexus_dga_mode {
	NEXUS_DGA_OFF = 0,
	NEXUS_DGA_COUNT = 1,
	NEXUS_DGA_BLOCK = 2,
};

enum nexus_block_response {
	NEXUS_BLOCK_NXDOMAIN = 0,
	NEXUS_BLOCK_REFUSED = 1,
	NEXUS_BLOCK_DROP = 2,
};

/* ---- DGA scoring (see nexusctl/dga.py, the reference) ----
 * Characters map to an alphabet of NEXUS_DGA_ALPHA symbols (a-z, 0-9, '-',
 * other); rarity[a * NEXUS_DGA_ALPHA + b] is how unusual the pair "ab" is in
 * ordinary names, 0 (common) .. 255 (never seen). One entry in nexus_dga. */
#define NEXUS_DGA_ALPHA 38
#define NEXUS_DGA_TABLE 2048            /* >= ALPHA * ALPHA, a power of two (index masking) */
struct nexus_dga_table {
	__u8 rarity[NEXUS_DGA_TABLE];
	__u16 w_rarity;                 /* weights of the three features, sum > 0 */
	__u16 w_digits;
	__u16 w_run;
	__u16 pad;
};

/* ---- DNS policy (see nexusctl/policy/ and bpf/include/policy.h) ----
 * Rules are found by hashing each suffix of the query name, from the top
 * label down: one hash-map lookup per label, whatever the number of rules.
 * A key is 128 bits from two independent 64-bit lanes seeded per host. */
enum nexus_policy_action {
	NEXUS_POL_NONE = 0,
	NEXUS_POL_BLOCK = 1,
	NEXUS_POL_REDIRECT = 2,
	NEXUS_POL_SYNTHESIZE = 3,
	NEXUS_POL_ALLOW = 4,
};

enum nexus_policy_kind {
	NEXUS_POL_EXACT = 1,            /* "name": that name only */
	NEXUS_POL_WILDCARD = 2,         /* "*.name": every name below it */
};

struct nexus_policy_key {
	__u64 h1;
	__u64 h2;
};

enum nexus_block_kind {
	NEXUS_BLK_DEFAULT = 0,          /* as config policy.block_response says */
	NEXUS_BLK_NXDOMAIN = 1,
	NEXUS_BLK_NODATA = 2,           /* NOERROR, no records (RPZ "CNAME *.") */
	NEXUS_BLK_REFUSED = 3,
	NEXUS_BLK_DROP = 4,
};

struct nexus_policy_val {
	__u16 priority;                 /* lower wins */
	__u16 pat_len;                  /* pattern length as written: longer wins a tie */
	__u16 qtypes;                   /* bit per query type (nexusctl/policy/rules.py QTYPE_BITS) */
	__u8 action;                    /* enum nexus_policy_action */
	__u8 block;                     /* enum nexus_block_kind, for block */
	__u8 has4;                      /* redirect/synthesize: addr4 / addr6 are set */
	__u8 has6;
	__u8 pad[2];
	__u8 addr4[4];
	__u8 addr6[16];
	__u32 rule_id;                  /* which source and rule (user space's numbering) */
};

/* Prefix rules ("ads.*") in an LPM trie over the lower-cased dotted name. */
#ifndef NEXUS_PREFIX_MAX
#define NEXUS_PREFIX_MAX 64
#endif
struct nexus_prefix_key {
	__u32 prefixlen;                /* bits */
	__u8 data[NEXUS_PREFIX_MAX];
};

/* An allow rule's pattern in wire form, checked byte for byte before an
 * allow is honoured: a crafted hash collision must never turn a block into
 * an allow. */
struct nexus_policy_verify {
	__u16 len;
	__u8 wire[256];
};

/* Which rule set is live, and the hash seeds. One entry in nexus_pol_state. */
struct nexus_policy_state {
	__u64 seed1;
	__u64 seed2;
	__u32 gen;                      /* slot (0/1) of the outer maps in use */
	__u32 active;                   /* any rule loaded at all */
};

/* ---- the answer cache ---- */
#ifndef NEXUS_CACHE_NAME
#define NEXUS_CACHE_NAME 128            /* names longer than this (wire form) are not cached */
#endif
#ifndef NEXUS_CACHE_DATA
#define NEXUS_CACHE_DATA 512            /* record bytes an entry holds */
#endif
#ifndef NEXUS_CACHE_MAX_RR
#define NEXUS_CACHE_MAX_RR 16           /* records (answer+authority+additional) an entry holds */
#endif

/* Lower-cased wire-form QNAME (zero padded), type, class and the DO bit. */
struct nexus_cache_key {
	__u8 name[NEXUS_CACHE_NAME];
	__u16 qtype;
	__u16 qclass;
	__u8 do_bit;
	__u8 pad[3];
};

/* The records of a resolver's answer, ready to be appended after a client's
 * question. TTL fields in data are zero; ttl_off/ttl_orig say where each TTL
 * goes and what it was at insert time. csum is the ones' complement sum of
 * data (TTLs zeroed) as if it started at an even offset. */
struct nexus_cache_val {
	__u64 inserted_ns;
	__u64 expires_ns;
	__u32 csum;
	__u16 data_len;
	__u16 flags;                    /* response flags (host order) except QR/TC/RD/opcode */
	__u16 ancount;
	__u16 nscount;
	__u16 arcount;                  /* without the OPT record */
	__u16 n_ttl;
	__u16 ttl_off[NEXUS_CACHE_MAX_RR];
	__u32 ttl_orig[NEXUS_CACHE_MAX_RR];
	__u8 data[NEXUS_CACHE_DATA];
};

/* ---- rate limiting: one GCRA state per client prefix ---- */
struct nexus_rl_key {
	__u8 family;                    /* 4 or 6 */
	__u8 prefix;
	__u8 pad[2];
	__u8 addr[16];                  /* masked to the prefix */
};

struct nexus_rl_state {
	__u64 tat_ns;                   /* theoretical arrival time of the next query */
	__u64 limited;                  /* queries over the limit so far */
};

/* ---- latency: queries waiting for the resolver's answer ---- */
struct nexus_inflight_val {
	__u64 ts_ns;                    /* when XDP passed the query on */
	__u8 no_cache;                  /* the query carried EDNS Client Subnet: do not cache its answer */
	__u8 pad[7];
};

struct nexus_inflight_key {
	__u8 addr[16];                  /* client address (IPv4 in the first 4 bytes) */
	__u16 port;                     /* client port, network order */
	__u16 id;                       /* DNS id, network order */
	__u8 family;
	__u8 pad[3];
};

enum nexus_malformed_action {
	NEXUS_MALFORMED_DROP = 0,
	NEXUS_MALFORMED_PASS = 1,
};

#endif /* NEXUS_STRUCTS_H */
