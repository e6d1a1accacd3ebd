// SPDX-License-Identifier: GPL-2.0
/* TC egress: sees the local resolver's answers on their way out. */
#include "nexus_common.h"
#include "nexus_maps.h"
#include "parsing_helpers.h"
#include "dns_helpers.h"

SEC("tc")
int nexus_dns_tc(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	const struct nexus_config *cfg;
	struct pkt_meta m = {};
	struct dnshdr *dns;
	int l4;

	cfg = get_config();
	if (!cfg)
		return TC_ACT_OK;
	count(NEXUS_CNT_TC_PACKETS);

	l4 = parse_l2_l4(data, data_end, &m);
	if (l4 != NEXUS_IPPROTO_UDP || !is_dns_port(cfg, m.sport) || m.is_fragment)
		return TC_ACT_OK;

	dns = pkt_ptr(data, m.payload_off);
	if (!dns || (void *)(dns + 1) > data_end) {
		count(NEXUS_CNT_TC_MALFORMED);
		return TC_ACT_OK;
	}
	if (!(bpf_ntohs(dns->flags) & DNS_FLAG_QR))
		return TC_ACT_OK;
	count(NEXUS_CNT_TC_RESPONSES);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
