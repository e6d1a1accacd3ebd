// SPDX-License-Identifier: GPL-2.0
/* XDP ingress: the DNS fast path.
 *
 * Every packet arriving on a configured interface is classified: UDP DNS
 * queries to a configured port are checked and counted; DNS over TCP and
 * over TLS/QUIC (853) are counted by kind and left to the stack, as is
 * everything that is not DNS. A query that fails a parse check is malformed:
 * counted, then dropped or passed as the config says. */
#include "nexus_common.h"
#include "nexus_maps.h"
#include "parsing_helpers.h"
#include "dns_helpers.h"

static __always_inline int malformed(const struct nexus_config *cfg)
{
	count(NEXUS_CNT_MALFORMED);
	if (cfg->malformed_action == NEXUS_MALFORMED_PASS) {
		count(NEXUS_CNT_MALFORMED_PASSED);
		return XDP_PASS;
	}
	return XDP_DROP;
}

SEC("xdp")
int nexus_dns_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	const struct nexus_config *cfg;
	struct pkt_meta m = {};
	struct dnshdr *dns;
	int l4;

	cfg = get_config();
	if (!cfg)
		return XDP_PASS;
	count(NEXUS_CNT_PACKETS);

	l4 = parse_l2_l4(data, data_end, &m);
	if (l4 == 0) {
		count(NEXUS_CNT_PASS_NON_DNS);
		return XDP_PASS;
	}
	if (m.dport == DNS_TLS_PORT) {
		count(NEXUS_CNT_PASS_ENCRYPTED);
		return XDP_PASS;
	}
	if (!is_dns_port(cfg, m.dport)) {
		if (is_dns_port(cfg, m.sport))
			count(NEXUS_CNT_PASS_RESPONSE);
		else
			count(NEXUS_CNT_PASS_NON_DNS);
		return XDP_PASS;
	}
	if (l4 == NEXUS_IPPROTO_TCP) {
		count(NEXUS_CNT_PASS_TCP);
		return XDP_PASS;
	}
	/* UDP to a DNS port from here on. */
	if (l4 < 0 || m.is_fragment)
		return malformed(cfg);

	dns = pkt_ptr(data, m.payload_off);
	if (!dns || (void *)(dns + 1) > data_end || m.payload_len < sizeof(*dns))
		return malformed(cfg);
	if (bpf_ntohs(dns->flags) & DNS_FLAG_QR) {
		count(NEXUS_CNT_PASS_RESPONSE);
		return XDP_PASS;
	}
	count(NEXUS_CNT_QUERIES);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
