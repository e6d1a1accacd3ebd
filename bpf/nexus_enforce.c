// SPDX-License-Identifier: GPL-2.0
/* The DNS egress enforcer on cgroup socket-address hooks.
 *
 * connect4/connect6 see TCP connects and connected UDP; sendmsg4/sendmsg6
 * see unconnected UDP sends (sendto/sendmsg with an address). A process in
 * a configured cgroup (or below it) may send to a DNS port of its policy
 * (53 and 853 by default) only to an address on the policy's allow list;
 * anything else is refused with EPERM (mode enforce) or let through and
 * reported (mode audit). Every refusal is counted per process
 * (nexus_procs.dns_denied), per policy and per CPU, and reported through
 * the nexus_enf_events ring buffer. Other ports are not touched.
 *
 * Returning 0 from a cgroup sock_addr program makes the syscall fail with
 * EPERM; 1 lets it proceed. */
#include "nexus_common.h"
#include "nexus_procs.h"
#include "nexus_enforce.h"

#define SOCK_ADDR_ALLOW 1
#define SOCK_ADDR_DENY 0

static __always_inline int enforce(struct bpf_sock_addr *ctx, enum nexus_enf_hook hook, __u8 family)
{
	const struct nexus_enf_policy *pol;
	__u32 addr[4];
	__u64 cgid = 0;
	__u16 port;

	enf_count(NEXUS_ENF_CNT_CHECKED);
	pol = enf_find_policy(&cgid);
	if (!pol) {
		/* attached above a configured cgroup's sibling, or a policy is
		 * being replaced: not ours to judge */
		enf_count(NEXUS_ENF_CNT_OUT_OF_SCOPE);
		return SOCK_ADDR_ALLOW;
	}
	/* user_port holds the port in network order in its low 16 bits */
	port = bpf_ntohs((__u16)ctx->user_port);
	if (!enf_is_dns_port(pol, port)) {
		enf_count(NEXUS_ENF_CNT_NOT_DNS);
		return SOCK_ADDR_ALLOW;
	}
	if (family == 4) {
		addr[0] = 0;
		addr[1] = 0;
		addr[2] = bpf_htonl(0xffff);
		addr[3] = ctx->user_ip4;
	} else {
		addr[0] = ctx->user_ip6[0];
		addr[1] = ctx->user_ip6[1];
		addr[2] = ctx->user_ip6[2];
		addr[3] = ctx->user_ip6[3];
	}
	if (enf_decide(pol, cgid, addr, port, family, (__u8)ctx->protocol, hook) == NEXUS_ENF_DENIED)
		return SOCK_ADDR_DENY;
	return SOCK_ADDR_ALLOW;
}

SEC("cgroup/connect4")
int nexus_enforce_connect4(struct bpf_sock_addr *ctx)
{
	return enforce(ctx, NEXUS_ENF_HOOK_CONNECT4, 4);
}

SEC("cgroup/connect6")
int nexus_enforce_connect6(struct bpf_sock_addr *ctx)
{
	return enforce(ctx, NEXUS_ENF_HOOK_CONNECT6, 6);
}

SEC("cgroup/sendmsg4")
int nexus_enforce_sendmsg4(struct bpf_sock_addr *ctx)
{
	return enforce(ctx, NEXUS_ENF_HOOK_SENDMSG4, 4);
}

SEC("cgroup/sendmsg6")
int nexus_enforce_sendmsg6(struct bpf_sock_addr *ctx)
{
	return enforce(ctx, NEXUS_ENF_HOOK_SENDMSG6, 6);
}

char LICENSE[] SEC("license") = "GPL";
