/* SPDX-License-Identifier: GPL-2.0 */
/* Metrics (bpf/nexus_metrics.c): the structs, enums and maps its tracepoint
 * and perf_event programs fill and user space reads (`nexusctl stats`,
 * `nexusctl metrics serve`). Per-process figures live in the shared
 * nexus_procs map (nexus_procs.h); DNS counters and latency in nexus_maps.h.
 *
 * User space reads every layout here from BTF: fixed-width types and explicit
 * padding only. Sizes marked "config" are set at load time from the YAML. */
#ifndef NEXUS_METRICS_H
#define NEXUS_METRICS_H

#include "nexus_consts.h"

/* ---- limits (overridable at build time) ---- */
#ifndef NEXUS_MAX_TLS_PORTS
#define NEXUS_MAX_TLS_PORTS 4
#endif
#ifndef NEXUS_MAX_IFACE_FILTER
#define NEXUS_MAX_IFACE_FILTER 8        /* config: metrics.interfaces */
#endif
#ifndef NEXUS_MAX_IFACES
#define NEXUS_MAX_IFACES 256            /* config: metrics.max_interfaces */
#endif
#ifndef NEXUS_MAX_MMSG
#define NEXUS_MAX_MMSG 8                /* sendmmsg messages whose own address is read */
#endif
#ifndef NEXUS_MAX_PENDING
#define NEXUS_MAX_PENDING 4096          /* syscalls/connects in flight we remember */
#endif
#ifndef NEXUS_MAX_PROG_RANGES
#define NEXUS_MAX_PROG_RANGES 128       /* JIT images (functions) of nexus programs sampling knows */
#endif
#define NEXUS_UIO_MAXIOV 1024           /* the kernel caps sendmmsg's vlen at UIO_MAXIOV */
#define NEXUS_IFNAMSIZ 16

/* Events of the tracepoint programs, one slot each in nexus_mcounters
 * (per-CPU). User space strips NEXUS_MCNT_ and lower-cases the rest. */
enum nexus_mcounter {
	NEXUS_MCNT_DNS_QUERIES = 0,     /* DNS queries sent by processes (the send succeeded) */
	NEXUS_MCNT_DNS_SEND_ERRORS,     /* DNS sends the kernel refused (enforcer, no route, ...) */
	NEXUS_MCNT_MMSG_UNREAD,         /* sendmmsg messages past NEXUS_MAX_MMSG, not read */
	NEXUS_MCNT_USER_READ_FAULTS,    /* a msghdr or sockaddr could not be read from user memory */
	NEXUS_MCNT_PROCS_FULL,          /* a figure with no per-process entry to go to */
	NEXUS_MCNT_TLS_CONNECTIONS,     /* TCP connections to a TLS port established (active opens) */
	NEXUS_MCNT_TLS_UNATTRIBUTED,    /* ...whose connecting process was not seen */
	NEXUS_MCNT_NETIF_FILTERED,      /* packets on interfaces outside metrics.interfaces */
	NEXUS_MCNT_NETIF_FULL,          /* packets on an interface nexus_netif had no room for */
	NEXUS_MCNT__MAX,
};

/* What a perf_event program samples; one program per event, because a
 * program cannot tell which event fired it. */
enum nexus_perf_event {
	NEXUS_PERF_CPU_CLOCK = 0,       /* software cpu-clock: always there */
	NEXUS_PERF_CYCLES,              /* hardware: only with a (virtual) PMU */
	NEXUS_PERF_INSTRUCTIONS,
	NEXUS_PERF_CACHE_MISSES,
	NEXUS_PERF__MAX,
};

/* Runtime settings, one entry in nexus_mconfig, written by `up`. */
struct nexus_metrics_config {
	__u16 dns_ports[NEXUS_MAX_DNS_PORTS];   /* host order; none set = 53 */
	__u16 tls_ports[NEXUS_MAX_TLS_PORTS];   /* host order; none set = 443 */
	__u8 iface_filter;                      /* 1: count only the interfaces named below */
	__u8 pad0[7];
	char ifaces[NEXUS_MAX_IFACE_FILTER][NEXUS_IFNAMSIZ];
};

/* An interface: ifindex alone is ambiguous across network namespaces. */
struct nexus_netif_key {
	__u32 ifindex;
	__u32 netns;                    /* inode number of the namespace (ls -i /run/netns) */
};

/* Received on one interface (per-CPU; name set on the CPU that made the entry). */
struct nexus_netif_stats {
	char name[NEXUS_IFNAMSIZ];
	__u64 packets;
	__u64 bytes;                    /* frame bytes, link-layer header included */
};

/* A DNS send between syscall entry and exit (keyed by thread). */
struct nexus_send_pending {
	__u32 dns;                      /* messages that go to a DNS port */
	__u32 mmsg;                     /* 1: sendmmsg (returns a message count) */
};

/* A connect to a TLS port between SYN_SENT and ESTABLISHED (keyed by sock):
 * the handshake completes in softirq, where the current task is anyone. */
struct nexus_tls_pending {
	__u32 tgid;
	__u32 pad0;
	char comm[16];
};

/* CPU samples per event (per-CPU). */
struct nexus_cpu_samples {
	__u64 samples;                  /* every sample */
	__u64 in_nexus;                 /* ...whose instruction pointer was in a nexus program */
};

/* Where the JIT put each nexus program; written by user space after loading. */
struct nexus_prog_range {
	__u64 start;
	__u64 end;                      /* exclusive */
	__u32 prog_id;
	__u32 pad0;
};

struct nexus_prog_ranges {
	__u32 count;
	__u32 pad0;
	struct nexus_prog_range r[NEXUS_MAX_PROG_RANGES];
};

/* ---- maps ---- */

/* Per-CPU event counters, indexed by enum nexus_mcounter. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NEXUS_MCNT__MAX);
	__type(key, __u32);
	__type(value, __u64);
} nexus_mcounters SEC(".maps");

/* struct nexus_metrics_config, written by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nexus_metrics_config);
} nexus_mconfig SEC(".maps");

/* Packets and bytes received per interface; least recently seen evicted. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, NEXUS_MAX_IFACES);
	__type(key, struct nexus_netif_key);
	__type(value, struct nexus_netif_stats);
} nexus_netif SEC(".maps");

/* DNS sends in flight, by pid_tgid (entry → exit of the syscall). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NEXUS_MAX_PENDING);
	__type(key, __u64);
	__type(value, struct nexus_send_pending);
} nexus_sendq SEC(".maps");

/* Connects to a TLS port in flight, by struct sock address. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NEXUS_MAX_PENDING);
	__type(key, __u64);
	__type(value, struct nexus_tls_pending);
} nexus_tlsq SEC(".maps");

/* CPU samples per event, indexed by enum nexus_perf_event. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NEXUS_PERF__MAX);
	__type(key, __u32);
	__type(value, struct nexus_cpu_samples);
} nexus_samples SEC(".maps");

/* Samples that landed in a program: key range slot * NEXUS_PERF__MAX + event. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NEXUS_MAX_PROG_RANGES * NEXUS_PERF__MAX);
	__type(key, __u32);
	__type(value, __u64);
} nexus_prog_samp SEC(".maps");

/* struct nexus_prog_ranges, written by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nexus_prog_ranges);
} nexus_prog_rng SEC(".maps");

/* Never read: put the key enums into the object's BTF for user space. */
const volatile enum nexus_mcounter nexus_mcounter_names = NEXUS_MCNT__MAX;
const volatile enum nexus_perf_event nexus_perf_event_names = NEXUS_PERF__MAX;

static __always_inline void mcount_n(enum nexus_mcounter c, __u64 n)
{
	percpu_add(&nexus_mcounters, c, n);
}

static __always_inline void mcount(enum nexus_mcounter c)
{
	mcount_n(c, 1);
}

static __always_inline const struct nexus_metrics_config *get_mconfig(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&nexus_mconfig, &zero);
}

#endif /* NEXUS_METRICS_H */
