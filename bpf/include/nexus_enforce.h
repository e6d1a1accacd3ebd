/* SPDX-License-Identifier: GPL-2.0 */
/* The DNS egress enforcer's structs, enums and maps (bpf/nexus_enforce.c and
 * bpf/nexus_enforce_lsm.c). User space reads every layout here from BTF.
 *
 * Scope: a policy belongs to one configured cgroup (v2) and covers the
 * processes in it and in its descendants. The programs are attached to the
 * topmost configured cgroups only; at run time they look for the nearest
 * configured ancestor of the sending process's cgroup (ancestor ids by
 * level, bpf_get_current_ancestor_cgroup_id), so a nested configured cgroup
 * gets its own policy and every send is decided (and counted) exactly once.
 */
#ifndef NEXUS_ENFORCE_H
#define NEXUS_ENFORCE_H

#include "nexus_consts.h"
#include <bpf/bpf_core_read.h>
#include "nexus_procs.h"          /* proc_stats(): per-process dns_denied */

#ifndef NEXUS_ENF_MAX_CGROUPS
#define NEXUS_ENF_MAX_CGROUPS 64        /* configured cgroups (policies) */
#endif
#ifndef NEXUS_ENF_MAX_ALLOW
#define NEXUS_ENF_MAX_ALLOW 4096        /* allow-list prefixes, all cgroups together */
#endif
#ifndef NEXUS_ENF_MAX_PORTS
#define NEXUS_ENF_MAX_PORTS 8           /* DNS ports per policy */
#endif
#ifndef NEXUS_ENF_MAX_DEPTH
#define NEXUS_ENF_MAX_DEPTH 32          /* cgroup levels walked looking for a policy */
#endif
#ifndef NEXUS_ENF_EVENTS_BYTES
#define NEXUS_ENF_EVENTS_BYTES (256 * 1024)  /* denial event ring buffer */
#endif

#define NEXUS_AF_INET 2
#define NEXUS_AF_INET6 10
#define NEXUS_EPERM 1

/* IPv4 destinations are matched as IPv4-mapped IPv6 (::ffff:a.b.c.d), so one
 * trie holds both families. Key data: policy index, then the address. */
#define NEXUS_ENF_V4_MAPPED_PREFIX 96   /* bits before the IPv4 address */
#define NEXUS_ENF_POLICY_BITS 32
#define NEXUS_ENF_ADDR_BITS 128
#define NEXUS_ENF_FULL_PREFIX (NEXUS_ENF_POLICY_BITS + NEXUS_ENF_ADDR_BITS)

enum nexus_enf_mode {
	NEXUS_ENF_MODE_AUDIT = 0,       /* count and report, let it through */
	NEXUS_ENF_MODE_ENFORCE = 1,     /* refuse with EPERM */
};

/* Which hook saw the send. */
enum nexus_enf_hook {
	NEXUS_ENF_HOOK_CONNECT4 = 0,
	NEXUS_ENF_HOOK_CONNECT6 = 1,
	NEXUS_ENF_HOOK_SENDMSG4 = 2,
	NEXUS_ENF_HOOK_SENDMSG6 = 3,
	NEXUS_ENF_HOOK_LSM_CONNECT = 4,
	NEXUS_ENF_HOOK_LSM_SENDMSG = 5,
	NEXUS_ENF_HOOK__MAX,
};

enum nexus_enf_verdict {
	NEXUS_ENF_ALLOWED = 0,
	NEXUS_ENF_DENIED = 1,           /* refused with EPERM (mode enforce) */
	NEXUS_ENF_AUDITED = 2,          /* would have been refused (mode audit) */
};

/* Per-CPU counters in nexus_enf_counters; user space strips NEXUS_ENF_CNT_
 * and lower-cases the rest, as for nexus_counters. */
enum nexus_enf_counter {
	NEXUS_ENF_CNT_CHECKED = 0,      /* connects/sends the programs saw */
	NEXUS_ENF_CNT_OUT_OF_SCOPE,     /* no configured cgroup above the sender */
	NEXUS_ENF_CNT_NOT_DNS,          /* destination port is not a DNS port */
	NEXUS_ENF_CNT_ALLOWED,          /* DNS to an allowed address */
	NEXUS_ENF_CNT_DENIED,           /* DNS elsewhere, refused (EPERM) */
	NEXUS_ENF_CNT_AUDITED,          /* DNS elsewhere, let through (audit) */
	NEXUS_ENF_CNT_EVENTS_LOST,      /* ring buffer full: event dropped */
	NEXUS_ENF_CNT_NOT_INET,         /* LSM hooks: not an AF_INET/AF_INET6 address */
	NEXUS_ENF_CNT__MAX,
};

/* One configured cgroup's policy, in nexus_enf_policy keyed by cgroup id. */
struct nexus_enf_policy {
	__u32 index;                    /* position in enforce.cgroups; allow-list key */
	__u8 mode;                      /* enum nexus_enf_mode */
	__u8 pad0;
	__u16 ports[NEXUS_ENF_MAX_PORTS]; /* host order; 0 = unused slot */
	__u16 pad1;
};

/* Allow-list key (LPM trie): prefixlen counts the policy index bits (always
 * all 32) plus the address prefix. */
struct nexus_enf_key {
	__u32 prefixlen;
	__u32 policy;                   /* struct nexus_enf_policy.index */
	__u32 addr[4];                  /* network order; IPv4 as ::ffff:a.b.c.d */
};

/* Per configured cgroup figures, per CPU, indexed by policy index. */
struct nexus_enf_cg_stats {
	__u64 checked;                  /* DNS-port sends seen */
	__u64 allowed;
	__u64 denied;
	__u64 audited;
};

/* A refused (or audited) DNS send, through nexus_enf_events. */
struct nexus_enf_event {
	__u64 time_ns;                  /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	__u64 cgroup_id;                /* the sender's cgroup */
	__u32 pid;                      /* thread group id */
	__u32 tid;
	__u32 uid;
	__u32 policy;                   /* struct nexus_enf_policy.index */
	__u32 addr[4];                  /* destination, network order, IPv4 mapped */
	__u16 port;                     /* destination port, host order */
	__u8 family;                    /* 4 or 6 (of the destination as sent) */
	__u8 protocol;                  /* IPPROTO_UDP or IPPROTO_TCP */
	__u8 hook;                      /* enum nexus_enf_hook */
	__u8 verdict;                   /* enum nexus_enf_verdict */
	__u8 pad[2];
	char comm[16];                  /* the process's (thread group leader's) name */
	char thread_comm[16];           /* the sending thread's name (dig: "isc-net-0000") */
};

/* ---- maps ---- */

/* cgroup id → policy, one entry per configured cgroup. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NEXUS_ENF_MAX_CGROUPS);
	__type(key, __u64);
	__type(value, struct nexus_enf_policy);
} nexus_enf_policy SEC(".maps");

/* (policy, address prefix) → 1: where that policy lets DNS go. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, NEXUS_ENF_MAX_ALLOW);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct nexus_enf_key);
	__type(value, __u8);
} nexus_enf_allow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NEXUS_ENF_CNT__MAX);
	__type(key, __u32);
	__type(value, __u64);
} nexus_enf_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NEXUS_ENF_MAX_CGROUPS);
	__type(key, __u32);
	__type(value, struct nexus_enf_cg_stats);
} nexus_enf_cg_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, NEXUS_ENF_EVENTS_BYTES);
} nexus_enf_events SEC(".maps");

/* Never read: put the enums into BTF, where user space finds their names. */
const volatile enum nexus_enf_counter nexus_enf_counter_names = NEXUS_ENF_CNT__MAX;
const volatile enum nexus_enf_hook nexus_enf_hook_names = NEXUS_ENF_HOOK__MAX;
const volatile enum nexus_enf_verdict nexus_enf_verdict_names = NEXUS_ENF_AUDITED;
const volatile enum nexus_enf_mode nexus_enf_mode_names = NEXUS_ENF_MODE_ENFORCE;
/* Likewise for the event layout: a ring buffer map carries no value type. */
const volatile struct nexus_enf_event nexus_enf_event_layout = {};

static __always_inline void enf_count(enum nexus_enf_counter c)
{
	percpu_add(&nexus_enf_counters, c, 1);
}

/* The policy of the nearest configured ancestor of the current task's cgroup
 * (the cgroup itself included), or NULL. Level 0 is the root; the helper
 * returns 0 past the task's own level, which ends the walk. */
static __always_inline const struct nexus_enf_policy *enf_find_policy(__u64 *cgid)
{
	const struct nexus_enf_policy *found = 0, *p;
	__u64 id;
	int level;

	for (level = 0; level < NEXUS_ENF_MAX_DEPTH; level++) {
		id = bpf_get_current_ancestor_cgroup_id(level);
		if (!id)
			break;
		p = bpf_map_lookup_elem(&nexus_enf_policy, &id);
		if (p)
			found = p;
		*cgid = id;
	}
	return found;
}

static __always_inline int enf_is_dns_port(const struct nexus_enf_policy *p, __u16 port)
{
	int i;

#pragma unroll
	for (i = 0; i < NEXUS_ENF_MAX_PORTS; i++) {
		if (p->ports[i] && p->ports[i] == port)
			return 1;
	}
	return 0;
}

/* The decision for one DNS-port destination; addr is network order with
 * IPv4 already mapped. Counts, reports and returns the verdict. */
static __always_inline enum nexus_enf_verdict
enf_decide(const struct nexus_enf_policy *pol, __u64 cgid, const __u32 addr[4], __u16 port,
	   __u8 family, __u8 protocol, enum nexus_enf_hook hook)
{
	struct nexus_enf_key key = {};
	struct nexus_enf_cg_stats *cs;
	struct nexus_proc_stats *ps;
	struct nexus_enf_event *ev;
	struct task_struct *task;
	enum nexus_enf_verdict verdict;
	__u32 idx = pol->index;
	__u64 pid_tgid;

	key.prefixlen = NEXUS_ENF_FULL_PREFIX;
	key.policy = idx;
	key.addr[0] = addr[0];
	key.addr[1] = addr[1];
	key.addr[2] = addr[2];
	key.addr[3] = addr[3];

	cs = bpf_map_lookup_elem(&nexus_enf_cg_stats, &idx);
	if (cs)
		cs->checked += 1;
	if (bpf_map_lookup_elem(&nexus_enf_allow, &key)) {
		enf_count(NEXUS_ENF_CNT_ALLOWED);
		if (cs)
			cs->allowed += 1;
		return NEXUS_ENF_ALLOWED;
	}

	if (pol->mode == NEXUS_ENF_MODE_ENFORCE) {
		verdict = NEXUS_ENF_DENIED;
		enf_count(NEXUS_ENF_CNT_DENIED);
		if (cs)
			cs->denied += 1;
	} else {
		verdict = NEXUS_ENF_AUDITED;
		enf_count(NEXUS_ENF_CNT_AUDITED);
		if (cs)
			cs->audited += 1;
	}
	ps = proc_stats();
	if (ps)
		__sync_fetch_and_add(&ps->dns_denied, 1);

	ev = bpf_ringbuf_reserve(&nexus_enf_events, sizeof(*ev), 0);
	if (!ev) {
		enf_count(NEXUS_ENF_CNT_EVENTS_LOST);
		return verdict;
	}
	pid_tgid = bpf_get_current_pid_tgid();
	ev->time_ns = bpf_ktime_get_ns();
	ev->cgroup_id = cgid;
	ev->pid = pid_tgid >> 32;
	ev->tid = (__u32)pid_tgid;
	ev->uid = (__u32)bpf_get_current_uid_gid();
	ev->policy = idx;
	ev->addr[0] = addr[0];
	ev->addr[1] = addr[1];
	ev->addr[2] = addr[2];
	ev->addr[3] = addr[3];
	ev->port = port;
	ev->family = family;
	ev->protocol = protocol;
	ev->hook = hook;
	ev->verdict = verdict;
	ev->pad[0] = 0;
	ev->pad[1] = 0;
	bpf_get_current_comm(ev->thread_comm, sizeof(ev->thread_comm));
	task = (struct task_struct *)bpf_get_current_task();
	if (bpf_probe_read_kernel_str(ev->comm, sizeof(ev->comm), BPF_CORE_READ(task, group_leader, comm)) < 0)
		__builtin_memcpy(ev->comm, ev->thread_comm, sizeof(ev->comm));
	bpf_ringbuf_submit(ev, 0);
	return verdict;
}

#endif /* NEXUS_ENFORCE_H */
