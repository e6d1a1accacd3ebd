/* SPDX-License-Identifier: GPL-2.0 */
/* Test objects for map layout changes (tests/kernel/test_map_layout.py).
 * Built twice: LT_VERSION 1, and 2 where the value struct keeps its size but
 * its fields move (libbpf alone would reuse the map with the old BTF), the
 * counter enum gets a member in the middle, and the ring buffer grows. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#ifndef LT_VERSION
#define LT_VERSION 1
#endif

#if LT_VERSION == 1
struct lt_value {
	__u64 hits;
	__u32 flags;
	__u32 pad;
};

enum lt_counter {
	LT_CNT_FIRST = 0,
	LT_CNT_LAST,
	LT_CNT__MAX,
};
#define LT_EVENTS_SIZE 4096
#else
struct lt_value {
	__u32 flags;
	__u32 extra;                    /* new: starts at zero */
	__u64 hits;
};

enum lt_counter {
	LT_CNT_FIRST = 0,
	LT_CNT_MIDDLE,                  /* new, in the middle: LAST moves */
	LT_CNT_LAST,
	LT_CNT__MAX,
};
#define LT_EVENTS_SIZE 8192
#endif

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct lt_value);
} nexus_lt_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LT_CNT__MAX);
	__type(key, __u32);
	__type(value, __u64);
} nexus_lt_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, LT_EVENTS_SIZE);
} nexus_lt_events SEC(".maps");

const volatile enum lt_counter lt_counter_names = LT_CNT__MAX;

static __always_inline int lt_touch(void)
{
	__u32 key = 1, cnt = LT_CNT_LAST;
	struct lt_value *v = bpf_map_lookup_elem(&nexus_lt_hash, &key);
	__u64 *c = bpf_map_lookup_elem(&nexus_lt_counters, &cnt);

	if (v)
		v->hits += 1;
	if (c)
		*c += 1;
	bpf_ringbuf_output(&nexus_lt_events, &key, sizeof(key), 0);
	return XDP_PASS;
}
