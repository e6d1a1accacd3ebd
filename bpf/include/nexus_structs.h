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
	__u8 pad0[3];
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

enum nexus_malformed_action {
	NEXUS_MALFORMED_DROP = 0,
	NEXUS_MALFORMED_PASS = 1,
};

#endif /* NEXUS_STRUCTS_H */
