// SPDX-License-Identifier: GPL-2.0
/* Metrics: tracepoints and perf events feeding per-CPU counters and the
 * per-process figures in nexus_procs.
 *
 * - DNS queries per process: the send syscalls (sendto, sendmsg, sendmmsg)
 *   count a query only when the destination port is a DNS port, read from
 *   the sockaddr the caller passes (IPv4 or IPv6) or, for a connected UDP
 *   socket, from the socket's peer. Entry remembers the send, exit counts it
 *   when the kernel accepted it (sendmmsg: as many as it sent).
 * - Packets and bytes received per interface (net:netif_receive_skb).
 * - TLS connections per process: TCP connects to a TLS port that reach
 *   ESTABLISHED (sock:inet_sock_set_state).
 * - CPU sampling (perf_event): counts samples, and those whose instruction
 *   pointer was inside a nexus program's JIT image, per program. XDP and TC
 *   programs can be hit; tracing programs (these tracepoints, uprobes) never
 *   are: the kernel skips a perf_event program on a CPU inside a tracing
 *   program (bpf_prog_active). `nexusctl stats --cost` measures those.
 *
 * Every program is attached by nexusctl through a pinned BPF link. */
#include "nexus_common.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "nexus_procs.h"
#include "nexus_metrics.h"

#define NEXUS_AF_INET 2
#define NEXUS_AF_INET6 10
#define NEXUS_S_IFMT 00170000           /* file type bits of i_mode */
#define NEXUS_S_IFSOCK 0140000
#define NEXUS_TLS_PORT 443
#define NEXUS_MAC_HDR_UNSET 0xFFFF      /* skb->mac_header when no L2 header was set */
#define NEXUS_MAC_HDR_MAX 64            /* longer "L2 headers" are not believed */

/* The head every inet sockaddr shares: the family, then the port. */
struct sa_head {
	__u16 family;
	__be16 port;
};
_Static_assert(__builtin_offsetof(struct sockaddr_in, sin_port) == 2 &&
	       __builtin_offsetof(struct sockaddr_in6, sin6_port) == 2,
	       "sin_port and sin6_port sit right after the family");

static __always_inline int port_listed(const __u16 *ports, int n, __u16 port, __u16 fallback)
{
	int i, any = 0;

	for (i = 0; i < n; i++) {
		if (ports[i] == 0)
			continue;
		any = 1;
		if (ports[i] == port)
			return 1;
	}
	return !any && port == fallback;
}

static __always_inline int is_dns_dport(const struct nexus_metrics_config *cfg, __u16 port)
{
	return port_listed(cfg->dns_ports, NEXUS_MAX_DNS_PORTS, port, DNS_PORT);
}

static __always_inline int is_tls_dport(const struct nexus_metrics_config *cfg, __u16 port)
{
	return port_listed(cfg->tls_ports, NEXUS_MAX_TLS_PORTS, port, NEXUS_TLS_PORT);
}

/* ------------------------------------------------------------ DNS sends */

/* The socket behind file descriptor fd of the current process, or NULL when
 * fd is not a socket (the syscall tracepoints only give the number). */
static __always_inline struct socket *fd_socket(unsigned long fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *f = NULL;
	umode_t mode;

	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return NULL;
	mode = BPF_CORE_READ(f, f_inode, i_mode);
	if ((mode & NEXUS_S_IFMT) != NEXUS_S_IFSOCK)
		return NULL;
	return BPF_CORE_READ(f, private_data);
}

static __always_inline int is_inet_dgram(struct socket *sock)
{
	__u16 family;

	if (!sock || BPF_CORE_READ(sock, type) != SOCK_DGRAM)
		return 0;
	family = BPF_CORE_READ(sock, sk, __sk_common.skc_family);
	return family == NEXUS_AF_INET || family == NEXUS_AF_INET6;
}

/* Does a send without an address (connected UDP socket) go to a DNS port? */
static __always_inline int peer_is_dns(const struct nexus_metrics_config *cfg, unsigned long fd)
{
	struct socket *sock = fd_socket(fd);

	if (!is_inet_dgram(sock))
		return 0;
	return is_dns_dport(cfg, bpf_ntohs(BPF_CORE_READ(sock, sk, __sk_common.skc_dport)));
}

/* Does a send to the user-memory sockaddr `uaddr` go to a DNS port?
 * A global function: the verifier checks it once, not once per message of
 * the sendmmsg loop (which made it walk ~150k instructions). */
__noinline int addr_is_dns(const struct nexus_metrics_config *cfg, __u64 uaddr, int len)
{
	if (!cfg)
		return 0;

	struct sa_head h;

	if (len < (int)sizeof(h))
		return 0;               /* the kernel refuses it (EINVAL) */
	if (bpf_probe_read_user(&h, sizeof(h), (const void *)uaddr)) {
		mcount(NEXUS_MCNT_USER_READ_FAULTS);
		return 0;
	}
	if (h.family != NEXUS_AF_INET && h.family != NEXUS_AF_INET6)
		return 0;
	return is_dns_dport(cfg, bpf_ntohs(h.port));
}

/* One message: its own address if it names one, else the socket's peer. */
static __always_inline int dest_is_dns(const struct nexus_metrics_config *cfg, unsigned long fd,
				       const void *uaddr, int len)
{
	if (!uaddr)
		return peer_is_dns(cfg, fd);
	/* A port alone does not make DNS: TCP (fast open) and raw sockets may
	 * carry an address too. Only UDP datagrams are queries here. */
	return addr_is_dns(cfg, (__u64)uaddr, len) && is_inet_dgram(fd_socket(fd));
}

static __always_inline void remember_send(__u32 dns, __u32 mmsg)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct nexus_send_pending p = { .dns = dns, .mmsg = mmsg };

	bpf_map_update_elem(&nexus_sendq, &id, &p, BPF_ANY);
}

/* sendto(fd, buf, len, flags, addr, addrlen); send() is sendto with no addr. */
SEC("tracepoint/syscalls/sys_enter_sendto")
int nexus_sendto(struct trace_event_raw_sys_enter *ctx)
{
	const struct nexus_metrics_config *cfg = get_mconfig();

	if (!cfg)
		return 0;
	if (dest_is_dns(cfg, ctx->args[0], (const void *)ctx->args[4], (int)ctx->args[5]))
		remember_send(1, 0);
	return 0;
}

/* sendmsg(fd, msg, flags) */
SEC("tracepoint/syscalls/sys_enter_sendmsg")
int nexus_sendmsg(struct trace_event_raw_sys_enter *ctx)
{
	const struct nexus_metrics_config *cfg = get_mconfig();
	struct user_msghdr msg;

	if (!cfg)
		return 0;
	if (bpf_probe_read_user(&msg, sizeof(msg), (const void *)ctx->args[1])) {
		mcount(NEXUS_MCNT_USER_READ_FAULTS);
		return 0;
	}
	if (dest_is_dns(cfg, ctx->args[0], msg.msg_name, msg.msg_namelen))
		remember_send(1, 0);
	return 0;
}

/* sendmmsg(fd, vec, vlen, flags): glibc's resolver and dig send their
 * queries this way, on a connected socket. */
SEC("tracepoint/syscalls/sys_enter_sendmmsg")
int nexus_sendmmsg(struct trace_event_raw_sys_enter *ctx)
{
	const struct nexus_metrics_config *cfg = get_mconfig();
	const struct mmsghdr *vec = (const struct mmsghdr *)ctx->args[1];
	__u32 vlen = ctx->args[2];
	struct user_msghdr msg;
	struct socket *sock;
	__u32 dns = 0, peer, i;

	if (!cfg || !vec || !vlen)
		return 0;
	sock = fd_socket(ctx->args[0]);
	if (!is_inet_dgram(sock))
		return 0;
	/* Messages without an address go to the connected peer. */
	peer = is_dns_dport(cfg, bpf_ntohs(BPF_CORE_READ(sock, sk, __sk_common.skc_dport)));
	if (vlen > NEXUS_UIO_MAXIOV)
		vlen = NEXUS_UIO_MAXIOV;
	for (i = 0; i < NEXUS_MAX_MMSG && i < vlen; i++) {
		if (bpf_probe_read_user(&msg, sizeof(msg), &vec[i].msg_hdr)) {
			mcount(NEXUS_MCNT_USER_READ_FAULTS);
			break;
		}
		dns += msg.msg_name ? addr_is_dns(cfg, (__u64)msg.msg_name, msg.msg_namelen) : peer;
	}
	if (vlen > NEXUS_MAX_MMSG) {
		/* Not read: assume they go where the socket is connected. */
		mcount_n(NEXUS_MCNT_MMSG_UNREAD, vlen - NEXUS_MAX_MMSG);
		if (peer)
			dns += vlen - NEXUS_MAX_MMSG;
	}
	if (dns)
		remember_send(dns, 1);
	return 0;
}

/* Exit of sendto, sendmsg and sendmmsg (the same program is attached to the
 * three): a remembered DNS send counts if the kernel took it. */
SEC("tracepoint/syscalls/sys_exit_sendto")
int nexus_send_ret(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct nexus_send_pending *p;
	struct nexus_proc_stats *s;
	long ret = ctx->ret;
	__u64 sent;

	p = bpf_map_lookup_elem(&nexus_sendq, &id);
	if (!p)
		return 0;
	sent = p->dns;
	if (p->mmsg && ret >= 0 && (__u64)ret < sent)
		sent = ret;             /* sendmmsg sent only the first `ret` messages */
	bpf_map_delete_elem(&nexus_sendq, &id);
	if (ret < 0) {
		mcount_n(NEXUS_MCNT_DNS_SEND_ERRORS, sent);
		return 0;
	}
	if (!sent)
		return 0;
	mcount_n(NEXUS_MCNT_DNS_QUERIES, sent);
	s = proc_stats_task();
	if (s)
		__sync_fetch_and_add(&s->dns_queries, sent);
	else
		mcount(NEXUS_MCNT_PROCS_FULL);
	return 0;
}

/* ------------------------------------------------------------ interfaces */

static __always_inline int iface_wanted(const struct nexus_metrics_config *cfg, const char name[NEXUS_IFNAMSIZ])
{
	const __u64 *want, *have = (const __u64 *)name;
	int i;

	for (i = 0; i < NEXUS_MAX_IFACE_FILTER; i++) {
		want = (const __u64 *)cfg->ifaces[i];
		if (want[0] == 0)
			continue;
		if (want[0] == have[0] && want[1] == have[1])
			return 1;
	}
	return 0;
}

SEC("tracepoint/net/netif_receive_skb")
int nexus_netif_rx(struct trace_event_raw_net_dev_template *ctx)
{
	const struct nexus_metrics_config *cfg = get_mconfig();
	struct sk_buff *skb = (struct sk_buff *)ctx->skbaddr;
	struct nexus_netif_key key = {};
	struct nexus_netif_stats *st, zero = {};
	struct net_device *dev;
	__u64 bytes = ctx->len;         /* L3 onwards: eth_type_trans pulled the L2 header */
	__u16 mac;
	void *head, *data;

	if (!cfg)
		return 0;
	dev = BPF_CORE_READ(skb, dev);
	if (!dev)
		return 0;
	if (cfg->iface_filter) {
		char name[NEXUS_IFNAMSIZ] __attribute__((aligned(8))) = {};

		bpf_core_read_str(name, sizeof(name), &dev->name);
		if (!iface_wanted(cfg, name)) {
			mcount(NEXUS_MCNT_NETIF_FILTERED);
			return 0;
		}
	}
	key.ifindex = BPF_CORE_READ(dev, ifindex);
	key.netns = BPF_CORE_READ(dev, nd_net.net, ns.inum);

	/* Count the frame as the interface did: add back the link-layer header,
	 * which starts at head + mac_header and ends at data. */
	mac = BPF_CORE_READ(skb, mac_header);
	head = BPF_CORE_READ(skb, head);
	data = BPF_CORE_READ(skb, data);
	if (mac != NEXUS_MAC_HDR_UNSET && data >= head + mac && data - (head + mac) <= NEXUS_MAC_HDR_MAX)
		bytes += data - (head + mac);

	st = bpf_map_lookup_elem(&nexus_netif, &key);
	if (!st) {
		bpf_core_read_str(zero.name, sizeof(zero.name), &dev->name);
		bpf_map_update_elem(&nexus_netif, &key, &zero, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&nexus_netif, &key);
		if (!st) {
			mcount(NEXUS_MCNT_NETIF_FULL);
			return 0;
		}
	}
	if (st->name[0] == 0)           /* per-CPU value: named on the CPU that made it */
		bpf_core_read_str(st->name, sizeof(st->name), &dev->name);
	st->packets += 1;
	st->bytes += bytes;
	return 0;
}

/* ------------------------------------------------------------ TLS connects */

SEC("tracepoint/sock/inet_sock_set_state")
int nexus_tcp_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	const struct nexus_metrics_config *cfg = get_mconfig();
	__u64 sk = (__u64)ctx->skaddr;
	struct nexus_tls_pending *p, fresh = {};
	struct nexus_proc_stats *s;

	if (!cfg || ctx->protocol != IPPROTO_TCP || !is_tls_dport(cfg, ctx->dport))
		return 0;
	if (ctx->newstate == TCP_SYN_SENT) {
		/* connect(): the one transition made by the connecting process. */
		fresh.tgid = bpf_get_current_pid_tgid() >> 32;
		current_process_comm(fresh.comm);
		bpf_map_update_elem(&nexus_tlsq, &sk, &fresh, BPF_ANY);
		return 0;
	}
	if (ctx->oldstate != TCP_SYN_SENT)
		return 0;
	p = bpf_map_lookup_elem(&nexus_tlsq, &sk);
	if (ctx->newstate == TCP_ESTABLISHED) {
		mcount(NEXUS_MCNT_TLS_CONNECTIONS);
		s = p ? proc_stats_for(p->tgid, p->comm) : NULL;
		if (s)
			__sync_fetch_and_add(&s->tls_connections, 1);
		else
			mcount(p ? NEXUS_MCNT_PROCS_FULL : NEXUS_MCNT_TLS_UNATTRIBUTED);
	}
	if (p)
		bpf_map_delete_elem(&nexus_tlsq, &sk);
	return 0;
}

/* ------------------------------------------------------------ CPU sampling */

static __always_inline int sample(struct bpf_perf_event_data *ctx, __u32 ev)
{
	__u64 ip = PT_REGS_IP(&ctx->regs);
	const struct nexus_prog_ranges *rng;
	struct nexus_cpu_samples *cs;
	__u32 zero = 0, i, key;
	__u64 *n;

	cs = bpf_map_lookup_elem(&nexus_samples, &ev);
	if (!cs)
		return 0;
	cs->samples += 1;
	rng = bpf_map_lookup_elem(&nexus_prog_rng, &zero);
	if (!rng)
		return 0;
	for (i = 0; i < NEXUS_MAX_PROG_RANGES && i < rng->count; i++) {
		if (ip < rng->r[i].start || ip >= rng->r[i].end)
			continue;
		cs->in_nexus += 1;
		key = i * NEXUS_PERF__MAX + ev;
		n = bpf_map_lookup_elem(&nexus_prog_samp, &key);
		if (n)
			*n += 1;
		break;
	}
	return 0;
}

SEC("perf_event")
int nexus_sw_clock(struct bpf_perf_event_data *ctx)
{
	return sample(ctx, NEXUS_PERF_CPU_CLOCK);
}

SEC("perf_event")
int nexus_hw_cycles(struct bpf_perf_event_data *ctx)
{
	return sample(ctx, NEXUS_PERF_CYCLES);
}

SEC("perf_event")
int nexus_hw_insns(struct bpf_perf_event_data *ctx)
{
	return sample(ctx, NEXUS_PERF_INSTRUCTIONS);
}

SEC("perf_event")
int nexus_hw_cmiss(struct bpf_perf_event_data *ctx)
{
	return sample(ctx, NEXUS_PERF_CACHE_MISSES);
}

char LICENSE[] SEC("license") = "GPL";
