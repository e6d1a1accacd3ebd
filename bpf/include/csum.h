/* SPDX-License-Identifier: GPL-2.0 */
/* Internet checksums built from parts.
 *
 * Sums are kept as big-endian 16-bit quantities in a 64-bit accumulator
 * (no overflow for anything a packet can hold) and folded at the end. A byte
 * at an even offset of the checksummed region is the high half of a word, at
 * an odd offset the low half; a block summed as if it started at an even
 * offset contributes its folded sum byte-swapped when it actually starts at an
 * odd one. That lets an answer's UDP checksum be assembled from the question
 * (summed while parsing), the cached records (summed when cached) and the few
 * fields written here, without reading the packet again. */
#ifndef NEXUS_CSUM_H
#define NEXUS_CSUM_H

static __always_inline __u64 csum_byte(__u8 b, __u32 off)
{
	return (off & 1) ? (__u64)b : (__u64)b << 8;
}

static __always_inline __u64 csum_u16(__u16 v, __u32 off)
{
	return csum_byte(v >> 8, off) + csum_byte(v & 0xff, off + 1);
}

static __always_inline __u64 csum_u32(__u32 v, __u32 off)
{
	return csum_u16(v >> 16, off) + csum_u16(v & 0xffff, off + 2);
}

static __always_inline __u16 csum_fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

static __always_inline __u16 swab16(__u16 v)
{
	return (v << 8) | (v >> 8);
}

/* A block's folded sum (computed from an even offset) placed at offset off. */
static __always_inline __u64 csum_block_at(__u16 folded, __u32 off)
{
	return (off & 1) ? swab16(folded) : folded;
}

/* Sum of an address (4 or 16 bytes) as it appears in a pseudo-header. */
static __always_inline __u64 csum_addr(const __u8 *a, int len)
{
	__u64 s = 0;
	int i;

#pragma unroll
	for (i = 0; i < 16; i += 2) {
		if (i >= len)
			break;
		s += ((__u64)a[i] << 8) | a[i + 1];
	}
	return s;
}

#endif /* NEXUS_CSUM_H */
