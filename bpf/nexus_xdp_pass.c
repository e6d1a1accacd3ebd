// SPDX-License-Identifier: GPL-2.0
/* An XDP program that passes everything.
 *
 * Two uses: on the peer end of a veth pair, so that frames the DNS program
 * sends back with XDP_TX are received (veth drops XDP_TX frames silently
 * when the peer has neither an XDP program nor GRO), and as the empty-program
 * floor in benchmarks. */
#include "nexus_common.h"

SEC("xdp")
int nexus_xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
