"""The 128-bit rule keys, exactly as bpf/include/policy.h computes them.

A name's labels are hashed one by one (two 64-bit FNV-1a lanes, each seeded
per host, starting from the label's length byte), then folded from the top
label down; the fold at a label is the key of the suffix starting there,
finished with the rule kind (exact or wildcard). keys_bulk() does the same
for a million patterns with numpy, column by column.
"""
from __future__ import annotations

import struct

import numpy as np

P1 = 0x100000001B3
P2 = 0x9E3779B97F4A7C15
M64 = (1 << 64) - 1
SUFFIX_TAG = 0x5F5F7375
EXACT, WILDCARD = 1, 2


def label_hash(label: bytes, seed: int, p: int) -> int:
    h = ((seed ^ len(label)) * p) & M64
    for c in label:
        h = ((h ^ c) * p) & M64
    return h


def _mix(h: int, x: int, p: int) -> int:
    h = ((h ^ x) * p) & M64
    return h ^ (h >> 32)


def _final(h: int, kind: int, p: int) -> int:
    h = ((h ^ kind) * p) & M64
    return h ^ (h >> 29)


def key(labels: list[bytes], kind: int, seeds: tuple[int, int]) -> bytes:
    """Key of a pattern given as lower-case labels (["example", "com"])."""
    s1, s2 = seeds
    h1, h2 = s1 ^ SUFFIX_TAG, s2 ^ SUFFIX_TAG
    for lab in reversed(labels):
        h1 = _mix(h1, label_hash(lab, s1, P1), P1)
        h2 = _mix(h2, label_hash(lab, s2, P2), P2)
    return struct.pack("<QQ", _final(h1, kind, P1), _final(h2, kind, P2))


# ---------------------------------------------------------------- numpy


def keys_for_names(names: list[str], kinds: int | list[int], seeds: tuple[int, int]) -> bytes:
    """Keys of many patterns given as lower-case dotted names ("example.com"),
    packed 16 bytes each, in order. Everything after joining the names into one
    buffer is done on whole columns with numpy: a million names take about a second."""
    n = len(names)
    if n == 0:
        return b""
    arr = np.frombuffer("\n".join(names).encode("ascii"), dtype=np.uint8)
    seps = np.flatnonzero((arr == 0x2E) | (arr == 0x0A))
    starts = np.concatenate(([0], seps + 1))
    ends = np.concatenate((seps, [len(arr)]))
    lens = (ends - starts).astype(np.int64)
    # a label ends its name where the separator is a newline (or at the very end)
    last = np.concatenate((arr[seps] == 0x0A, [True]))
    name_of = np.concatenate(([0], np.cumsum(last[:-1])))
    per_name = np.bincount(name_of, minlength=n)
    last_label = np.cumsum(per_name) - 1
    kind_arr = np.full(n, kinds, dtype=np.uint64) if isinstance(kinds, int) else np.asarray(kinds, np.uint64)
    order = np.argsort(lens, kind="stable")
    slens = lens[order]
    sstarts = starts[order]
    corder = np.argsort(per_name, kind="stable")
    scount = per_name[corder]
    lanes = ((seeds[0], P1), (seeds[1], P2))
    with np.errstate(over="ignore"):
        # label hashes, both lanes from one gather per column; labels sorted by
        # length, so "labels longer than j" is a tail slice
        hs = [(np.uint64(seed) ^ slens.astype(np.uint64)) * np.uint64(p) for seed, p in lanes]
        for j in range(int(slens[-1]) if len(slens) else 0):
            first = int(np.searchsorted(slens, j, side="right"))
            col = arr[sstarts[first:] + j].astype(np.uint64)
            for (seed, p), h in zip(lanes, hs):
                h[first:] = (h[first:] ^ col) * np.uint64(p)
        out = np.empty((n, 2), dtype=np.uint64)
        for lane, ((seed, p), h) in enumerate(zip(lanes, hs)):
            P = np.uint64(p)
            lh = np.empty_like(h)
            lh[order] = h
            # fold from each name's top label down
            H = np.full(n, np.uint64(seed ^ SUFFIX_TAG), dtype=np.uint64)
            for j in range(int(scount[-1])):
                first = int(np.searchsorted(scount, j, side="right"))  # names with more than j labels
                sel = corder[first:]
                t = (H[sel] ^ lh[last_label[sel] - j]) * P
                H[sel] = t ^ (t >> np.uint64(32))
            t = (H ^ kind_arr) * P
            out[:, lane] = t ^ (t >> np.uint64(29))
    return out.astype("<u8").tobytes()
