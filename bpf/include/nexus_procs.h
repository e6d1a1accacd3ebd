/* SPDX-License-Identifier: GPL-2.0 */
/* Per-process figures shared by metrics, the certificate observer and the
 * enforcer: one pinned LRU map, one "look up or insert zero" helper. */
#ifndef NEXUS_PROCS_H
#define NEXUS_PROCS_H

#include <bpf/bpf_core_read.h>
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

/* The entry of process tgid, created (named comm) on first use: for figures
 * attributed outside the process's own context (e.g. a TCP handshake that
 * completes in softirq). */
static __always_inline struct nexus_proc_stats *proc_stats_for(__u32 tgid, const char *comm)
{
	struct nexus_proc_stats *s, zero = {};

	s = bpf_map_lookup_elem(&nexus_procs, &tgid);
	if (!s) {
		__builtin_memcpy(zero.comm, comm, sizeof(zero.comm));
		bpf_map_update_elem(&nexus_procs, &tgid, &zero, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&nexus_procs, &tgid);
	}
	if (s)
		s->last_seen_ns = bpf_ktime_get_ns();
	return s;
}

/* The process's name: its main thread's comm, as /proc/PID/comm shows it.
 * The calling thread's comm can differ: dig sends its queries from a thread
 * named "isc-net-0000". Tracing programs only (bpf_get_current_task). */
static __always_inline void current_process_comm(char comm[16])
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);

	bpf_core_read_str(comm, 16, &leader->comm);
}

/* Like proc_stats(), for tracing programs (tracepoint, uprobe, perf_event):
 * the entry carries the process's name, refreshed on use (exec renames). */
static __always_inline struct nexus_proc_stats *proc_stats_task(void)
{
	char comm[16] = {};
	struct nexus_proc_stats *s;

	current_process_comm(comm);
	s = proc_stats_for(bpf_get_current_pid_tgid() >> 32, comm);
	if (s)
		__builtin_memcpy(s->comm, comm, sizeof(comm));
	return s;
}

#endif /* NEXUS_PROCS_H */
