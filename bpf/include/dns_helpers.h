/* SPDX-License-Identifier: GPL-2.0 */
/* DNS message parsing shared by the XDP and TC programs. */
#ifndef DNS_HELPERS_H
#define DNS_HELPERS_H

#include "nexus_structs.h"

struct dnshdr {
	__be16 id;
	__be16 flags;
	__be16 qdcount;
	__be16 ancount;
	__be16 nscount;
	__be16 arcount;
};

/* True when port is one of the configured DNS ports (53 when none is set). */
static __always_inline int is_dns_port(const struct nexus_config *cfg, __u16 port)
{
	int i, any = 0;

#pragma unroll
	for (i = 0; i < NEXUS_MAX_DNS_PORTS; i++) {
		if (cfg->dns_ports[i] == 0)
			continue;
		any = 1;
		if (cfg->dns_ports[i] == port)
			return 1;
	}
	return !any && port == DNS_PORT;
}

#endif /* DNS_HELPERS_H */
