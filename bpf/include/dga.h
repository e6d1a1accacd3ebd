/* SPDX-License-Identifier: GPL-2.0 */
/* DGA score of the registrable label, 0..1000, in the integer arithmetic of
 * nexusctl/dga.py (the reference; tests compare the two on many names). */
#ifndef NEXUS_DGA_H
#define NEXUS_DGA_H

#include "nexus_maps.h"
#include "dns_helpers.h"
#include "parsing_helpers.h"

#define DGA_RUN_CAP 6                   /* consonant runs longer than this score the same */
#define DGA_OTHER (NEXUS_DGA_ALPHA - 1)
#define DGA_SCALE 1000
#define DGA_RARITY_MAX 255

static __always_inline __u32 dga_alpha(__u8 c)
{
	if (c >= 'a' && c <= 'z')
		return c - 'a';
	if (c >= '0' && c <= '9')
		return 26 + c - '0';
	if (c == '-')
		return 36;
	return DGA_OTHER;
}

static __always_inline int dga_consonant(__u8 c)
{
	return c >= 'a' && c <= 'z' && c != 'a' && c != 'e' && c != 'i' && c != 'o' && c != 'u';
}

struct dga_walk {
	const struct nexus_scratch *s;
	const struct nexus_dga_table *t;
	__u32 off;                      /* first byte of the label in s->name */
	__u32 len;
	__u32 prev;
	__u32 rsum;
	__u32 digits;
	__u32 run;
	__u32 best;
};

/* One character per call: bpf_loop verifies this body once, whatever the
 * label length, instead of once per length and feature combination. */
static long dga_step(__u32 i, struct dga_walk *w)
{
	__u32 cur;
	__u8 c;

	if (i >= w->len)
		return 1;
	c = w->s->name[bounded(w->off + i, NAME_MASK)];
	cur = dga_alpha(c);
	if (i > 0)
		w->rsum += w->t->rarity[bounded(w->prev * NEXUS_DGA_ALPHA + cur, NEXUS_DGA_TABLE - 1)];
	w->prev = cur;
	if (c >= '0' && c <= '9')
		w->digits++;
	if (dga_consonant(c)) {
		w->run++;
		if (w->run > w->best)
			w->best = w->run;
	} else {
		w->run = 0;
	}
	return 0;
}

static __always_inline __u32 dga_score(const struct nexus_scratch *s, const struct nexus_config *cfg)
{
	struct dga_walk w = {};
	__u32 zero = 0, len = s->q.reg_len, rarity, dig, runs, total;

	if (len < cfg->dga_min_len || len > DNS_MAX_LABEL || len < 2)
		return 0;
	w.t = bpf_map_lookup_elem(&nexus_dga, &zero);
	if (!w.t)
		return 0;
	w.s = s;
	w.off = s->q.reg_off + 1;               /* first byte after the length */
	w.len = len;
	w.prev = DGA_OTHER;
	bpf_loop(DNS_MAX_LABEL, dga_step, &w, 0);
	rarity = w.rsum * DGA_SCALE / (DGA_RARITY_MAX * (len - 1));
	dig = w.digits * DGA_SCALE / len;
	runs = (w.best < DGA_RUN_CAP ? w.best : DGA_RUN_CAP) * DGA_SCALE / DGA_RUN_CAP;
	total = w.t->w_rarity + w.t->w_digits + w.t->w_run;
	if (!total)
		return 0;
	return (w.t->w_rarity * rarity + w.t->w_digits * dig + w.t->w_run * runs) / total;
}

#endif /* NEXUS_DGA_H */
