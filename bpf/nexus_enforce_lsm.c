// SPDX-License-Identifier: GPL-2.0
/* The DNS egress enforcer as BPF LSM programs (socket_connect and
 * socket_sendmsg), used instead of the cgroup hooks where the kernel accepts
 * LSM programs (`nexusctl doctor`: "enforce: BPF LSM"; config enforce.lsm).
 *
 * Why: cgroup socket hooks run for sockets *created* in the cgroup; a socket
 * made elsewhere and passed in (SCM_RIGHTS) escapes them. LSM hooks see every
 * connect and send, and the policy is looked up from the current task's
 * cgroup the same way (nearest configured ancestor). Same maps, same
 * counters and events as bpf/nexus_enforce.c.
 *
 * Not verified on the development kernel (6.18 there refuses LSM program
 * loads with EPERM); `nexusctl verify` reports it as unsupported there. */
#include "nexus_common.h"
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "nexus_procs.h"
#include "nexus_enforce.h"

#define LSM_ALLOW 0

/* The prefix of struct sockaddr_in6 we read: family, port, flowinfo, address.
 * Kernel callers hand a sockaddr_storage (128 bytes), so reading this much
 * never leaves the caller's buffer, even for a shorter AF_INET address. */
struct enf_sockaddr {
	__u16 family;
	__be16 port;
	union {
		__be32 v4;                       /* sockaddr_in.sin_addr */
		struct {
			__u32 flowinfo;
			__u32 addr[4];           /* sockaddr_in6.sin6_addr */
		} v6;
	};
};

static __always_inline int enforce_sockaddr(struct socket *sock, const void *uaddr, int addrlen,
					    enum nexus_enf_hook hook)
{
	const struct nexus_enf_policy *pol;
	struct enf_sockaddr sa = {};
	__u32 addr[4];
	__u64 cgid = 0;
	__u8 family, protocol;
	__u16 port;

	if (!uaddr || addrlen < (int)sizeof(struct sockaddr_in))
		return LSM_ALLOW;
	if (bpf_probe_read_kernel(&sa, sizeof(sa), uaddr))
		return LSM_ALLOW;
	if (sa.family == NEXUS_AF_INET) {
		family = 4;
		addr[0] = 0;
		addr[1] = 0;
		addr[2] = bpf_htonl(0xffff);
		addr[3] = sa.v4;
	} else if (sa.family == NEXUS_AF_INET6 && addrlen >= (int)sizeof(struct sockaddr_in6)) {
		family = 6;
		addr[0] = sa.v6.addr[0];
		addr[1] = sa.v6.addr[1];
		addr[2] = sa.v6.addr[2];
		addr[3] = sa.v6.addr[3];
	} else {
		enf_count(NEXUS_ENF_CNT_NOT_INET);
		return LSM_ALLOW;
	}

	enf_count(NEXUS_ENF_CNT_CHECKED);
	pol = enf_find_policy(&cgid);
	if (!pol) {
		enf_count(NEXUS_ENF_CNT_OUT_OF_SCOPE);
		return LSM_ALLOW;
	}
	port = bpf_ntohs(sa.port);
	if (!enf_is_dns_port(pol, port)) {
		enf_count(NEXUS_ENF_CNT_NOT_DNS);
		return LSM_ALLOW;
	}
	protocol = (__u8)BPF_CORE_READ(sock, sk, sk_protocol);
	if (enf_decide(pol, cgid, addr, port, family, protocol, hook) == NEXUS_ENF_DENIED)
		return -NEXUS_EPERM;
	return LSM_ALLOW;
}

SEC("lsm/socket_connect")
int BPF_PROG(nexus_enforce_lsm_connect, struct socket *sock, struct sockaddr *address, int addrlen, int ret)
{
	if (ret)
		return ret;             /* an earlier LSM already refused */
	return enforce_sockaddr(sock, address, addrlen, NEXUS_ENF_HOOK_LSM_CONNECT);
}

SEC("lsm/socket_sendmsg")
int BPF_PROG(nexus_enforce_lsm_sendmsg, struct socket *sock, struct msghdr *msg, int size, int ret)
{
	void *name;
	int namelen;

	if (ret)
		return ret;
	/* no address: a connected socket, decided at connect */
	name = BPF_CORE_READ(msg, msg_name);
	namelen = BPF_CORE_READ(msg, msg_namelen);
	return enforce_sockaddr(sock, name, namelen, NEXUS_ENF_HOOK_LSM_SENDMSG);
}

char LICENSE[] SEC("license") = "GPL";
