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

#endif /* NEXUS_COMMON_H */
