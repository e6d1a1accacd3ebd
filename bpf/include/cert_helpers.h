/* SPDX-License-Identifier: GPL-2.0 */
/* Helpers of the certificate observer: the DER length of a certificate and
 * the keyed hash that names it in the kernel.
 *
 * The hash is SipHash-2-4's compression and finalization over the DER in
 * little-endian 8-byte words (the last one zero-padded), followed by one
 * word (copied << 32 | der_len). SipHash is a keyed PRF: with a random key
 * (cert_secret) a server cannot choose bytes that collide with another
 * certificate's key, and a collision could in any case only make the kernel
 * act on a block verdict (kill), never skip the agent's judgement.
 * nexusctl/ops/cert.py has the same function in Python (tests compare). */
#ifndef CERT_HELPERS_H
#define CERT_HELPERS_H

#include "nexus_cert.h"

#define SIP_C0 0x736f6d6570736575ULL    /* "somepseu" */
#define SIP_C1 0x646f72616e646f6dULL    /* "dorandom" */
#define SIP_C2 0x6c7967656e657261ULL    /* "lygenera" */
#define SIP_C3 0x7465646279746573ULL    /* "tedbytes" */
#define SIP_FINAL_XOR 0xff
#define SIP_C_ROUNDS 2
#define SIP_D_ROUNDS 4

struct sip_state {
	__u64 v0, v1, v2, v3;
};

static __always_inline __u64 rotl64(__u64 x, int b)
{
	return (x << b) | (x >> (64 - b));
}

static __always_inline void sip_round(struct sip_state *s)
{
	s->v0 += s->v1; s->v1 = rotl64(s->v1, 13); s->v1 ^= s->v0; s->v0 = rotl64(s->v0, 32);
	s->v2 += s->v3; s->v3 = rotl64(s->v3, 16); s->v3 ^= s->v2;
	s->v0 += s->v3; s->v3 = rotl64(s->v3, 21); s->v3 ^= s->v0;
	s->v2 += s->v1; s->v1 = rotl64(s->v1, 17); s->v1 ^= s->v2; s->v2 = rotl64(s->v2, 32);
}

static __always_inline void sip_init(struct sip_state *s, __u64 k0, __u64 k1)
{
	s->v0 = k0 ^ SIP_C0;
	s->v1 = k1 ^ SIP_C1;
	s->v2 = k0 ^ SIP_C2;
	s->v3 = k1 ^ SIP_C3;
}

static __always_inline void sip_word(struct sip_state *s, __u64 m)
{
	s->v3 ^= m;
#pragma unroll
	for (int r = 0; r < SIP_C_ROUNDS; r++)
		sip_round(s);
	s->v0 ^= m;
}

static __always_inline __u64 sip_final(struct sip_state *s)
{
	s->v2 ^= SIP_FINAL_XOR;
#pragma unroll
	for (int r = 0; r < SIP_D_ROUNDS; r++)
		sip_round(s);
	return s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
}

/* The length of the DER element starting with hdr (tag + length octets +
 * contents), or 0 when hdr does not start a SEQUENCE we accept. */
static __always_inline __u32 der_total_len(const __u8 *hdr)
{
	__u32 n, len = 0;

	if (hdr[0] != DER_TAG_SEQUENCE)
		return 0;
	if (!(hdr[1] & DER_LEN_LONG_FORM))
		return 2 + hdr[1];
	n = hdr[1] & DER_LEN_OCTETS_MASK;
	if (n == 0 || n > NEXUS_CERT_MAX_LEN_OCTETS)
		return 0;
#pragma unroll
	for (int i = 0; i < NEXUS_CERT_MAX_LEN_OCTETS; i++) {
		if (i < n)
			len = (len << 8) | hdr[2 + i];
	}
	return 2 + n + len;
}

#endif /* CERT_HELPERS_H */
