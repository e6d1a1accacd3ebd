/* SPDX-License-Identifier: GPL-2.0 */
/* Per-process figures shared by metrics, the certificate observer and the
 * enforcer: one pinned LRU map, one "look up or insert zero" helper. */
#ifndef NEXUS_PROCS_H
#define NEXUS_PROCS_H

#include "nexus_structs.h"

#ifndef NEXUS_MAX_PROCS
#define NEXUS_MAX_PROCS 16384           /* config: metrics.max_processes */
#endif

/* struct nexus_proc_stats per tgid; least recently updated process evicted. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NEXUS_MAX_PROCS);
	__type(key, __u32);
	__type(value, struct nexus_proc_stats);
} nexus_procs SEC(".maps");

/* The current process's entry, created (with its comm) on first use. */
static __always_inline struct nexus_proc_stats *proc_stats(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct nexus_proc_stats *s, zero = {};

	s = bpf_map_lookup_elem(&nexus_procs, &tgid);
	if (!s) {
		bpf_get_current_comm(zero.comm, sizeof(zero.comm));
		bpf_map_update_elem(&nexus_procs, &tgid, &zero, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&nexus_procs, &tgid);
	}
	if (s)
		s->last_seen_ns = bpf_ktime_get_ns();
	return s;
}

#endif /* NEXUS_PROCS_H */
