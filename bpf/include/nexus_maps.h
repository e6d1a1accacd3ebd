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

/* Never read: put the key enums into the object's BTF, where user space
 * finds the names of counters and latency paths. */
const volatile enum nexus_counter nexus_counter_names = NEXUS_CNT__MAX;
const volatile enum nexus_lat_path nexus_lat_path_names = NEXUS_LAT__MAX;

static __always_inline void count(enum nexus_counter c)
{
	__u32 key = c;
	__u64 *v = bpf_map_lookup_elem(&nexus_counters, &key);

	if (v)
		*v += 1;
}

static __always_inline const struct nexus_config *get_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&nexus_config, &zero);
}

#endif /* NEXUS_MAPS_H */
