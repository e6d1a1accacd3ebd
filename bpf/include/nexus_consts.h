/* SPDX-License-Identifier: GPL-2.0 */
/* Limits and protocol constants shared by every nexus program.
 *
 * vmlinux.h carries types but not the UAPI macros, so the few protocol
 * numbers we need live here. Limits are overridable at build time
 * (clang -DNEXUS_MAX_VLAN_DEPTH=4 ...).
 */
#ifndef NEXUS_CONSTS_H
#define NEXUS_CONSTS_H

/* ---- protocol numbers ---- */
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define ETH_ALEN 6

#define NEXUS_IPPROTO_HOPOPTS 0
#define NEXUS_IPPROTO_TCP 6
#define NEXUS_IPPROTO_UDP 17
#define NEXUS_IPPROTO_ROUTING 43
#define NEXUS_IPPROTO_FRAGMENT 44
#define NEXUS_IPPROTO_ESP 50
#define NEXUS_IPPROTO_AH 51
#define NEXUS_IPPROTO_NONE 59
#define NEXUS_IPPROTO_DSTOPTS 60

#define IPV4_IHL_MIN 5          /* in 32-bit words */
#define IPV4_IHL_MAX 15
#define IPV4_FRAG_MF 0x2000     /* more fragments (host order) */
#define IPV4_FRAG_OFFSET 0x1FFF /* fragment offset mask (host order) */
#define IPV4_DEFAULT_TTL 64
#define IPV6_DEFAULT_HOPLIMIT 64

#define XDP_PASS_ACT 2          /* only for documentation in tables */

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2

/* ---- DNS ---- */
#define DNS_PORT 53
#define DNS_TLS_PORT 853
#define DNS_HDR_LEN 12
#define DNS_MAX_NAME 255        /* wire length of a name, root label included */
#define DNS_MAX_LABEL 63
#define DNS_MAX_LABELS 127
#define DNS_LABEL_PTR_MASK 0xC0 /* top bits of a compression pointer */
#define DNS_QFIXED_LEN 4        /* QTYPE + QCLASS after the QNAME */
#define DNS_RR_FIXED_LEN 10     /* TYPE CLASS TTL RDLENGTH */
#define DNS_OPT_RR_LEN 11       /* root name + fixed part, no options */
#define DNS_UDP_MIN_SIZE 512    /* RFC 1035 limit without EDNS */

/* Header flag bits (host order of the 16-bit flags word) */
#define DNS_FLAG_QR 0x8000
#define DNS_OPCODE_MASK 0x7800
#define DNS_FLAG_AA 0x0400
#define DNS_FLAG_TC 0x0200
#define DNS_FLAG_RD 0x0100
#define DNS_FLAG_RA 0x0080
#define DNS_FLAG_AD 0x0020
#define DNS_FLAG_CD 0x0010
#define DNS_RCODE_MASK 0x000F

#define DNS_RCODE_NOERROR 0
#define DNS_RCODE_FORMERR 1
#define DNS_RCODE_SERVFAIL 2
#define DNS_RCODE_NXDOMAIN 3
#define DNS_RCODE_REFUSED 5

#define DNS_TYPE_A 1
#define DNS_TYPE_NS 2
#define DNS_TYPE_CNAME 5
#define DNS_TYPE_SOA 6
#define DNS_TYPE_PTR 12
#define DNS_TYPE_MX 15
#define DNS_TYPE_TXT 16
#define DNS_TYPE_AAAA 28
#define DNS_TYPE_SRV 33
#define DNS_TYPE_OPT 41
#define DNS_TYPE_HTTPS 65
#define DNS_TYPE_ANY 255
#define DNS_CLASS_IN 1

#define EDNS_DO_BIT 0x8000      /* in the OPT TTL's low 16 bits */
#define EDNS_OPT_ECS 8          /* EDNS Client Subnet option code */

/* ---- limits (overridable) ---- */
#ifndef NEXUS_MAX_VLAN_DEPTH
#define NEXUS_MAX_VLAN_DEPTH 2
#endif
#ifndef NEXUS_MAX_IPV6_EXT
#define NEXUS_MAX_IPV6_EXT 4    /* extension headers walked before giving up */
#endif
#ifndef NEXUS_MAX_DNS_PORTS
#define NEXUS_MAX_DNS_PORTS 4
#endif
#ifndef NEXUS_MAX_HDR_OFF
#define NEXUS_MAX_HDR_OFF 512   /* L2-L4 headers longer than this are not parsed */
#endif
#define NEXUS_HDR_OFF_MASK 1023 /* power of two minus one, >= NEXUS_MAX_HDR_OFF */
#ifndef NEXUS_NAME_BUF
#define NEXUS_NAME_BUF 256      /* scratch copy of a QNAME, power of two */
#endif

#endif /* NEXUS_CONSTS_H */
