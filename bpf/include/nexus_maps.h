/* SPDX-License-Identifier: GPL-2.0 */
/* Maps shared by the DNS programs. Every object that includes this header
 * declares the same maps; nexusctl pins them by name under <pin_root>/maps/
 * and the second object to load reuses the first one's, so XDP and TC see
 * one counter array, one config, one cache. Sizes marked "config" are
 * overridden at load time from the YAML config. */
#ifndef NEXUS_MAPS_H
#define NEXUS_MAPS_H

#include "nexus_structs.h"

/* Per-CPU event counters, indexed by enum nexus_counter. Array keys must be
 * plain u32 for the kernel's BTF check, so the enum reaches BTF through
 * nexus_counter_names below; user space names the counters from it. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NEXUS_CNT__MAX);
	__type(key, __u32);
	__type(value, __u64);
} nexus_counters SEC(".maps");

/* Runtime settings written by user space; see struct nexus_config. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nexus_config);
} nexus_config SEC(".maps");

/* DNS latency histograms per path (enum nexus_lat_path); see struct nexus_latency. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NEXUS_LAT__MAX);
	__type(key, __u32);
	__type(value, struct nexus_latency);
} nexus_latency SEC(".maps");

/* Answers of the local resolver, filled at TC egress, served at XDP ingress.
 * Size: config dns.cache.max_entries. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct nexus_cache_key);
	__type(value, struct nexus_cache_val);
} nexus_cache SEC(".maps");

/* One GCRA state per client prefix. Size: config dns.rate_limit.max_clients. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct nexus_rl_key);
	__type(value, struct nexus_rl_state);
} nexus_ratelimit SEC(".maps");

/* Queries on their way to the resolver: ingress time by (client, port, id).
 * Size: config dns.latency.max_inflight. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct nexus_inflight_key);
	__type(value, struct nexus_inflight_val);
} nexus_inflight SEC(".maps");

/* The DGA scorer's pair-rarity table and weights, written at `up`. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nexus_dga_table);
} nexus_dga SEC(".maps");

/* Never read: put the key enums into the object's BTF, where user space
 * finds the names of counters and latency paths. */
const volatile enum nexus_counter nexus_counter_names = NEXUS_CNT__MAX;
const volatile enum nexus_lat_path nexus_lat_path_names = NEXUS_LAT__MAX;

static __always_inline void count(enum nexus_counter c)
{
	percpu_add(&nexus_counters, c, 1);
}

static __always_inline void count_n(enum nexus_counter c, __u64 n)
{
	percpu_add(&nexus_counters, c, n);
}

/* log2 bucket of a duration in ns: bucket i holds [2^i, 2^(i+1)). */
static __always_inline __u32 log2_bucket(__u64 v)
{
	__u32 r = 0;
	int i;

#pragma unroll
	for (i = 5; i >= 0; i--) {
		__u32 shift = 1U << i;

		if (v >= (1ULL << shift)) {
			v >>= shift;
			r += shift;
		}
	}
	return r < NEXUS_LAT_BUCKETS ? r : NEXUS_LAT_BUCKETS - 1;
}

static __always_inline void record_latency(enum nexus_lat_path path, __u64 ns)
{
	__u32 key = path;
	struct nexus_latency *l = bpf_map_lookup_elem(&nexus_latency, &key);
	__u32 b;

	if (!l)
		return;
	b = log2_bucket(ns);
	if (b < NEXUS_LAT_BUCKETS)
		l->buckets[b] += 1;
	l->count += 1;
	l->sum_ns += ns;
}

static __always_inline const struct nexus_config *get_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&nexus_config, &zero);
}

#endif /* NEXUS_MAPS_H */
