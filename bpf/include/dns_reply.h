/* SPDX-License-Identifier: GPL-2.0 */
/* Turn a query into its answer in place and send it back (XDP_TX).
 *
 * The client's Ethernet/VLAN/IP/UDP headers are reused with addresses and
 * ports swapped, its DNS ID, RD/CD flags and question bytes (its 0x20 case)
 * are kept, the records come from a cache entry or a synthesized one, and an
 * OPT record is carried exactly when the query had one. The UDP checksum is
 * assembled from parts (csum.h); IPv4's header checksum is recomputed. */
#ifndef NEXUS_DNS_REPLY_H
#define NEXUS_DNS_REPLY_H

#include "nexus_maps.h"
#include "parsing_helpers.h"
#include "dns_helpers.h"
#include "csum.h"

#define NS_PER_SEC 1000000000ULL
#define IPV4_HDR_LEN 20
#define IPV6_HDR_LEN 40
#define UDP_HDR_LEN 8
#define DNS_REPLY_KEEP_QFLAGS (DNS_FLAG_RD | DNS_FLAG_CD)
#define DNS_REPLY_KEEP_RFLAGS (DNS_FLAG_AA | DNS_FLAG_TC | DNS_FLAG_RA | DNS_RCODE_MASK)
#define DEFAULT_EDNS_UDP_SIZE 1232

static __always_inline void swap_mac(struct ethhdr *eth)
{
	__u8 tmp[ETH_ALEN];

	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
}

#define PKT_OFF_MASK 4095               /* > any offset an answer writes at */

/* A pointer to len bytes at off in the packet, or NULL: for direct stores. */
static __always_inline __u8 *pkt_at(struct xdp_md *ctx, __u32 off, const __u32 len)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u8 *p;

	if (off > PKT_OFF_MASK)
		return 0;
	p = data + bounded(off, PKT_OFF_MASK);
	if ((void *)(p + len) > end)
		return 0;
	return p;
}

static __always_inline __u16 ipv4_csum(struct iphdr *iph)
{
	__u16 *w = (__u16 *)iph;
	__u64 s = 0;
	int i;

	iph->check = 0;
#pragma unroll
	for (i = 0; i < IPV4_HDR_LEN / 2; i++)
		s += bpf_ntohs(w[i]);
	return bpf_htons(~csum_fold(s));
}

enum reply_result {
	REPLY_SENT = 0,                 /* the packet holds the answer: XDP_TX */
	REPLY_UNTOUCHED = -1,           /* nothing changed: pass the query on */
	REPLY_DAMAGED = -2,             /* failed half-way (a helper refused): drop */
};

/* Answer the query parsed into s with the records of val (a cache entry or
 * a synthesized one in s->synth). Everything that can refuse is checked
 * before the packet is touched. */
/* A global (non-static) function: the verifier checks it once, on its own,
 * rather than again at each of the three places that answer. */
__noinline int dns_reply(struct xdp_md *ctx, struct nexus_scratch *s, const struct nexus_cache_val *val,
			 __u64 now)
{
	if (!ctx || !s || !val)
		return REPLY_UNTOUCHED;
	{
	struct dns_q *q = &s->q;
	__u32 name_len = q->name_len, data_len = val->data_len, n_ttl = val->n_ttl;
	__u32 dns_off = q->payload_off, opt_len = q->has_opt ? DNS_OPT_RR_LEN : 0;
	__u32 ans_off, msg_len, frame_len, l3_off, l4_off, i;
	__u64 sum, age;
	__u16 rflags, udp_len, edns_size;
	void *data, *data_end;
	struct ethhdr *eth;
	__u8 *p;
	struct udphdr *udp;
	struct dnshdr *dns;
	int delta;

	if (name_len > DNS_MAX_NAME || data_len > NEXUS_CACHE_DATA || dns_off > NEXUS_MAX_HDR_OFF ||
	    n_ttl > NEXUS_CACHE_MAX_RR)
		return -1;
	l3_off = s->l3_off;
	l4_off = s->l4_off;
	if (l3_off > NEXUS_MAX_HDR_OFF || l4_off > NEXUS_MAX_HDR_OFF)
		return -1;
	ans_off = sizeof(struct dnshdr) + name_len + DNS_QFIXED_LEN;
	msg_len = ans_off + data_len + opt_len;
	if (msg_len > q->udp_size)
		return -1;                            /* the client could not take it: resolver truncates */
	for (i = 0; i < NEXUS_CACHE_MAX_RR; i++) {
		if (i >= n_ttl)
			break;
		if (val->ttl_off[i] + 4 > data_len)
			return -1;                    /* a damaged entry: let the resolver answer */
	}

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	frame_len = dns_off + msg_len;
	delta = (int)frame_len - (int)(data_end - data);
	if (delta && bpf_xdp_adjust_tail(ctx, delta)) {
		/* No tailroom. veth hands XDP the sender's skb as it is, often
		 * with none to spare; headroom (XDP_PACKET_HEADROOM) is promised
		 * to every XDP program, so grow at the front instead and move the
		 * headers and the question forward. */
		__u32 keep = dns_off + ans_off;

		if (delta < 0 || keep > NEXUS_MOVE_BUF || keep == 0)
			return -1;
		if (bpf_xdp_load_bytes(ctx, 0, s->move_buf, keep))
			return -1;
		if (bpf_xdp_adjust_head(ctx, -delta))
			return -1;                    /* unchanged */
		if (bpf_xdp_store_bytes(ctx, 0, s->move_buf, keep))
			return REPLY_DAMAGED;
	}

	/* records, then their TTLs aged, then the OPT record */
	if (data_len > 0 && bpf_xdp_store_bytes(ctx, dns_off + ans_off, (void *)val->data, data_len))
		return REPLY_DAMAGED;
	age = now > val->inserted_ns ? (now - val->inserted_ns) / NS_PER_SEC : 0;
	sum = csum_block_at(csum_fold(val->csum), ans_off);
	for (i = 0; i < NEXUS_CACHE_MAX_RR; i++) {
		__u32 off, ttl, be;

		if (i >= n_ttl)
			break;
		off = val->ttl_off[i];
		if (off + 4 > data_len)
			return REPLY_DAMAGED;     /* checked above; keeps the verifier's bound */
		ttl = val->ttl_orig[i] > age ? val->ttl_orig[i] - (__u32)age : 0;
		p = pkt_at(ctx, dns_off + ans_off + off, sizeof(be));
		if (!p)
			return REPLY_DAMAGED;
		p[0] = ttl >> 24;                     /* direct stores: cheaper than a helper call */
		p[1] = ttl >> 16;
		p[2] = ttl >> 8;
		p[3] = ttl;
		sum += csum_u32(ttl, ans_off + off);
	}
	if (opt_len) {
		__u32 o = ans_off + data_len;
		__u8 do_flag = q->do_bit ? (EDNS_DO_BIT >> 8) : 0;

		edns_size = s->edns_udp_size ? s->edns_udp_size : DEFAULT_EDNS_UDP_SIZE;
		p = pkt_at(ctx, dns_off + o, DNS_OPT_RR_LEN);
		if (!p)
			return REPLY_DAMAGED;
		/* root owner, TYPE OPT, CLASS = our UDP size, TTL = ext-rcode 0,
		 * version 0, flags (DO), RDLENGTH 0 */
		p[0] = 0;
		p[1] = 0;
		p[2] = DNS_TYPE_OPT;
		p[3] = edns_size >> 8;
		p[4] = edns_size & 0xff;
		p[5] = 0;
		p[6] = 0;
		p[7] = do_flag;
		p[8] = 0;
		p[9] = 0;
		p[10] = 0;
		sum += csum_u16(DNS_TYPE_OPT, o + 1) + csum_u16(edns_size, o + 3) + csum_byte(do_flag, o + 7);
	}

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;

	/* DNS header: the client's ID stays in place */
	dns = pkt_ptr(data, dns_off);
	if (!dns || (void *)(dns + 1) > data_end)
		return REPLY_DAMAGED;
	rflags = DNS_FLAG_QR | (q->flags & DNS_REPLY_KEEP_QFLAGS) | (val->flags & DNS_REPLY_KEEP_RFLAGS);
	if ((val->flags & DNS_FLAG_AD) && ((q->flags & DNS_FLAG_AD) || q->do_bit))
		rflags |= DNS_FLAG_AD;
	dns->flags = bpf_htons(rflags);
	dns->qdcount = bpf_htons(1);
	dns->ancount = bpf_htons(val->ancount);
	dns->nscount = bpf_htons(val->nscount);
	dns->arcount = bpf_htons(val->arcount + (opt_len ? 1 : 0));
	sum += bpf_ntohs(dns->id) + rflags + 1 + val->ancount + val->nscount + val->arcount + (opt_len ? 1 : 0);
	sum += q->q_sum;

	/* UDP: ports swapped, length, checksum over the pseudo-header */
	udp = pkt_ptr(data, l4_off);
	if (!udp || (void *)(udp + 1) > data_end)
		return REPLY_DAMAGED;
	{
		__u16 sport = udp->source;

		udp->source = udp->dest;
		udp->dest = sport;
	}
	udp_len = UDP_HDR_LEN + msg_len;
	udp->len = bpf_htons(udp_len);
	udp->check = 0;
	sum += bpf_ntohs(udp->source) + bpf_ntohs(udp->dest) + udp_len;   /* the header */
	sum += udp_len + NEXUS_IPPROTO_UDP;                                /* the pseudo-header */

	if (s->eth_proto == ETH_P_IP) {
		struct iphdr *iph = pkt_ptr(data, l3_off);
		__be32 a;

		if (!iph || (void *)(iph + 1) > data_end)
			return REPLY_DAMAGED;
		a = iph->saddr;
		iph->saddr = iph->daddr;
		iph->daddr = a;
		iph->tot_len = bpf_htons(IPV4_HDR_LEN + udp_len);
		iph->ttl = IPV4_DEFAULT_TTL;
		iph->frag_off = 0;
		iph->check = ipv4_csum(iph);
		sum += csum_addr((__u8 *)&iph->saddr, 4) + csum_addr((__u8 *)&iph->daddr, 4);
	} else {
		struct ipv6hdr *ip6 = pkt_ptr(data, l3_off);
		struct in6_addr a;

		if (!ip6 || (void *)(ip6 + 1) > data_end)
			return REPLY_DAMAGED;
		a = ip6->saddr;
		ip6->saddr = ip6->daddr;
		ip6->daddr = a;
		ip6->payload_len = bpf_htons(udp_len);
		ip6->hop_limit = IPV6_DEFAULT_HOPLIMIT;
		sum += csum_addr((__u8 *)&ip6->saddr, 16) + csum_addr((__u8 *)&ip6->daddr, 16);
	}
	udp = pkt_ptr(data, l4_off);
	if (!udp || (void *)(udp + 1) > data_end)
		return REPLY_DAMAGED;
	{
		__u16 c = ~csum_fold(sum);

		udp->check = bpf_htons(c ? c : 0xffff);   /* 0 means "no checksum" in UDP */
	}

	eth = data;
	if ((void *)(eth + 1) > data_end)
		return REPLY_DAMAGED;
	swap_mac(eth);
	return REPLY_SENT;
	}
}

#endif /* NEXUS_DNS_REPLY_H */
