// SPDX-License-Identifier: GPL-2.0
#include "layout.h"

SEC("xdp")
int nexus_lt_a(struct xdp_md *ctx)
{
	return lt_touch();
}

char LICENSE[] SEC("license") = "GPL";
