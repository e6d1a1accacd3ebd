/* SPDX-License-Identifier: GPL-2.0 */
/* Includes every nexus program starts with. vmlinux.h is generated from the
 * running kernel's BTF into the build directory by `nexusctl build`. */
#ifndef NEXUS_COMMON_H
#define NEXUS_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "nexus_consts.h"
#include "nexus_structs.h"

/* Add n to slot key of a per-CPU array of u64 counters: every feature's
 * counters go through this one helper. */
static __always_inline void percpu_add(void *map, __u32 key, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(map, &key);

	if (v)
		*v += n;
}

#endif /* NEXUS_COMMON_H */
