/* SPDX-License-Identifier: GPL-2.0 */
/* Header parsers over a cursor, one per protocol, in the style of
 * xdp-tutorial's parsing_helpers.h. Each checks `hdr + 1 > data_end` before
 * touching the header and moves the cursor past it. They work on any
 * context with direct packet access (XDP and TC alike). */
#ifndef PARSING_HELPERS_H
#define PARSING_HELPERS_H

#include "nexus_consts.h"

struct hdr_cursor {
	void *pos;
};

/* struct vlan_hdr comes from vmlinux.h (h_vlan_TCI, h_vlan_encapsulated_proto). */

struct ipv6_opt_hdr_min {
	__u8 nexthdr;
	__u8 hdrlen;                    /* in 8-byte units, not counting the first 8 */
};

struct ipv6_frag_hdr_min {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;                /* offset in 8-byte units << 3 | flags */
	__be32 identification;
};

#define IPV6_FRAG_OFFSET_MASK 0xFFF8
#define IPV6_FRAG_MF 0x0001

/* What the L2-L4 walk found; offsets are from the start of the packet. */
struct pkt_meta {
	__u16 l3_off;
	__u16 l4_off;
	__u16 payload_off;              /* first byte after the UDP/TCP header */
	__u16 payload_len;              /* from the UDP length field, checked */
	__u16 eth_proto;                /* host order: ETH_P_IP or ETH_P_IPV6 */
	__u8 l4_proto;
	__u8 vlan_depth;
	__u8 ip_has_options;            /* IPv4 options or IPv6 extension headers */
	__u8 is_fragment;               /* any fragment */
	__u8 is_first_fragment;         /* carries the L4 header */
	__u8 pad;
	__u16 sport;                    /* host order */
	__u16 dport;
};

/* data + off as a pointer the verifier can range-check. Offsets kept in
 * struct pkt_meta are u16, and the verifier only records a range for a
 * packet pointer whose variable part is known to be small. clang proves the
 * mask redundant after the comparison and would drop it, and the comparison
 * alone may land on another register copy; the asm keeps the bound on the
 * register actually used. */
static __always_inline void *pkt_ptr(void *data, __u32 off)
{
	if (off > NEXUS_MAX_HDR_OFF)
		return 0;
	asm volatile("%0 &= %1" : "+r"(off) : "i"(NEXUS_HDR_OFF_MASK));
	return data + off;
}

/* v & mask where clang cannot drop the mask as redundant: gives the
 * verifier a bound on the register actually used as an index. */
static __always_inline __u32 bounded(__u32 v, const __u32 mask)
{
	asm volatile("%0 &= %1" : "+r"(v) : "i"(mask));
	return v;
}

static __always_inline int proto_is_vlan(__u16 h_proto)
{
	return h_proto == bpf_htons(ETH_P_8021Q) || h_proto == bpf_htons(ETH_P_8021AD);
}

/* Returns the (network order) EtherType after up to NEXUS_MAX_VLAN_DEPTH
 * tags, or -1 when the frame is too short or stacks more tags than that. */
static __always_inline int parse_ethhdr(struct hdr_cursor *nh, void *data_end,
					struct ethhdr **ethhdr, __u8 *depth)
{
	struct ethhdr *eth = nh->pos;
	struct vlan_hdr *vlh;
	__u16 h_proto;
	int i;

	if ((void *)(eth + 1) > data_end)
		return -1;
	nh->pos = eth + 1;
	*ethhdr = eth;
	*depth = 0;
	h_proto = eth->h_proto;

#pragma unroll
	for (i = 0; i < NEXUS_MAX_VLAN_DEPTH; i++) {
		if (!proto_is_vlan(h_proto))
			break;
		vlh = nh->pos;
		if ((void *)(vlh + 1) > data_end)
			return -1;
		h_proto = vlh->h_vlan_encapsulated_proto;
		nh->pos = vlh + 1;
		*depth += 1;
	}
	if (proto_is_vlan(h_proto))
		return -1;              /* deeper than we walk */
	return h_proto;
}

/* Returns the L4 protocol, or -1 for a truncated or impossible header. */
static __always_inline int parse_iphdr(struct hdr_cursor *nh, void *data_end,
				       struct iphdr **iphdr, struct pkt_meta *m)
{
	struct iphdr *iph = nh->pos;
	__u32 hdrsize;
	__u16 frag;

	if ((void *)(iph + 1) > data_end)
		return -1;
	if (iph->version != 4 || iph->ihl < IPV4_IHL_MIN)
		return -1;
	hdrsize = iph->ihl * 4;
	if (nh->pos + hdrsize > data_end)
		return -1;
	if (bpf_ntohs(iph->tot_len) < hdrsize)
		return -1;

	frag = bpf_ntohs(iph->frag_off);
	m->is_fragment = (frag & (IPV4_FRAG_MF | IPV4_FRAG_OFFSET)) != 0;
	m->is_first_fragment = m->is_fragment && (frag & IPV4_FRAG_OFFSET) == 0;
	m->ip_has_options = iph->ihl > IPV4_IHL_MIN;

	nh->pos += hdrsize;
	*iphdr = iph;
	return iph->protocol;
}

/* Walks up to NEXUS_MAX_IPV6_EXT extension headers. Returns the upper-layer
 * protocol, or -1 for a truncated chain or one longer than we walk. */
static __always_inline int parse_ip6hdr(struct hdr_cursor *nh, void *data_end,
					struct ipv6hdr **ip6hdr, struct pkt_meta *m)
{
	struct ipv6hdr *ip6h = nh->pos;
	struct ipv6_opt_hdr_min *opt;
	struct ipv6_frag_hdr_min *fh;
	__u8 nexthdr;
	int i;

	if ((void *)(ip6h + 1) > data_end)
		return -1;
	if (ip6h->version != 6)
		return -1;
	nh->pos = ip6h + 1;
	*ip6hdr = ip6h;
	nexthdr = ip6h->nexthdr;

#pragma unroll
	for (i = 0; i < NEXUS_MAX_IPV6_EXT; i++) {
		switch (nexthdr) {
		case NEXUS_IPPROTO_HOPOPTS:
		case NEXUS_IPPROTO_ROUTING:
		case NEXUS_IPPROTO_DSTOPTS:
			opt = nh->pos;
			if ((void *)(opt + 1) > data_end)
				return -1;
			nexthdr = opt->nexthdr;
			nh->pos += (opt->hdrlen + 1) * 8;
			m->ip_has_options = 1;
			break;
		case NEXUS_IPPROTO_FRAGMENT:
			fh = nh->pos;
			if ((void *)(fh + 1) > data_end)
				return -1;
			nexthdr = fh->nexthdr;
			m->is_fragment = 1;
			m->is_first_fragment =
				(bpf_ntohs(fh->frag_off) & IPV6_FRAG_OFFSET_MASK) == 0;
			nh->pos = fh + 1;
			m->ip_has_options = 1;
			break;
		default:
			return nexthdr;
		}
	}
	switch (nexthdr) {
	case NEXUS_IPPROTO_HOPOPTS:
	case NEXUS_IPPROTO_ROUTING:
	case NEXUS_IPPROTO_DSTOPTS:
	case NEXUS_IPPROTO_FRAGMENT:
		return -1;              /* chain longer than NEXUS_MAX_IPV6_EXT */
	}
	return nexthdr;
}

/* Returns the UDP payload length claimed by the header, checked against
 * what the packet holds, or -1. */
static __always_inline int parse_udphdr(struct hdr_cursor *nh, void *data_end,
					struct udphdr **udphdr)
{
	struct udphdr *h = nh->pos;
	int len;

	if ((void *)(h + 1) > data_end)
		return -1;
	nh->pos = h + 1;
	*udphdr = h;
	len = bpf_ntohs(h->len) - (int)sizeof(*h);
	if (len < 0)
		return -1;
	return len;
}

/* Fills *m with the L2-L4 layout. Returns the L4 protocol (TCP or UDP) on
 * success, 0 for "not IP, or not a transport header we can read", and -1
 * for a UDP datagram whose ports are known (m->sport, m->dport) but whose
 * length field lies about the packet. */
static __always_inline int parse_l2_l4(void *data, void *data_end, struct pkt_meta *m)
{
	struct hdr_cursor nh = { .pos = data };
	struct ethhdr *eth;
	struct iphdr *iph;
	struct ipv6hdr *ip6h;
	struct udphdr *udph;
	struct tcphdr *tcph;
	int eth_type, proto, len;
	__u32 l3_end;

	eth_type = parse_ethhdr(&nh, data_end, &eth, &m->vlan_depth);
	if (eth_type < 0)
		return 0;               /* not something we parse: leave it alone */
	m->l3_off = nh.pos - data;

	if (eth_type == bpf_htons(ETH_P_IP)) {
		m->eth_proto = ETH_P_IP;
		proto = parse_iphdr(&nh, data_end, &iph, m);
		if (proto < 0)
			return 0;
		l3_end = m->l3_off + bpf_ntohs(iph->tot_len);
	} else if (eth_type == bpf_htons(ETH_P_IPV6)) {
		m->eth_proto = ETH_P_IPV6;
		proto = parse_ip6hdr(&nh, data_end, &ip6h, m);
		if (proto < 0)
			return 0;
		l3_end = m->l3_off + sizeof(*ip6h) + bpf_ntohs(ip6h->payload_len);
	} else {
		return 0;
	}
	m->l4_proto = proto;
	m->l4_off = nh.pos - data;
	if (m->l4_off > NEXUS_MAX_HDR_OFF)
		return 0;

	if (m->is_fragment && !m->is_first_fragment)
		return 0;               /* no L4 header in this piece */

	if (proto == NEXUS_IPPROTO_UDP) {
		udph = nh.pos;
		if ((void *)(udph + 1) > data_end)
			return 0;
		m->sport = bpf_ntohs(udph->source);
		m->dport = bpf_ntohs(udph->dest);
		len = parse_udphdr(&nh, data_end, &udph);
		if (len < 0)
			return -1;
		m->payload_off = nh.pos - data;
		/* The UDP length must fit in the IP datagram; a fragment's UDP
		 * length covers pieces we do not have, so skip that check. */
		if (!m->is_fragment && m->payload_off + len > l3_end)
			return -1;
		if (!m->is_fragment && data + m->payload_off + len > data_end)
			return -1;
		m->payload_len = len;
		return NEXUS_IPPROTO_UDP;
	}
	if (proto == NEXUS_IPPROTO_TCP) {
		tcph = nh.pos;
		if ((void *)(tcph + 1) > data_end)
			return -1;
		m->sport = bpf_ntohs(tcph->source);
		m->dport = bpf_ntohs(tcph->dest);
		m->payload_off = m->l4_off + tcph->doff * 4;
		return NEXUS_IPPROTO_TCP;
	}
	return 0;
}

#endif /* PARSING_HELPERS_H */
