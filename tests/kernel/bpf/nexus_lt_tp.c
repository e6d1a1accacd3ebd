// SPDX-License-Identifier: GPL-2.0
/* Test object for reloading a tracing link (tests/kernel/test_reload_links.py):
 * counts getppid() calls into a map that must survive the reload. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} nexus_lt_tp_hits SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getppid")
int nexus_lt_tp(void *ctx)
{
	__u32 zero = 0;
	__u64 *hits = bpf_map_lookup_elem(&nexus_lt_tp_hits, &zero);

	if (hits)
		__sync_fetch_and_add(hits, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
