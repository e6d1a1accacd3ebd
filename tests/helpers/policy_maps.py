"""Put DNS policy rules into the kernel maps of a loaded object set, the way
bpf/include/policy.h reads them, for BPF_PROG_TEST_RUN tests (the fuzzer needs
rules in place so mutated queries hit block, synthesize, redirect and allow).

Keys come from nexusctl.policy.hashing (the Python mirror of the kernel's
hashes); the inner maps are created here with bpf_map_create and put into
generation `gen` of the outer array-of-maps, then nexus_pol_state flips to it.
"""
from __future__ import annotations

import ctypes
import ipaddress
import os
import struct
from ctypes import Structure, c_char_p, c_int, c_size_t, c_uint32, c_uint64, c_void_p
from dataclasses import dataclass

from nexusctl.policy import hashing
from nexusctl.tools import libbpf as L

MAP_HASH, MAP_LPM_TRIE, MAP_BLOOM = 1, 11, 30
F_NO_PREALLOC = 1
ACTIONS = {"block": 1, "redirect": 2, "synthesize": 3, "allow": 4}
ALL_QTYPES = 0xFFFF
SEEDS = (0x0123456789ABCDEF, 0xFEDCBA9876543210)


class _CreateOpts(Structure):
    _fields_ = [("sz", c_size_t), ("btf_fd", c_uint32), ("btf_key_type_id", c_uint32),
                ("btf_value_type_id", c_uint32), ("btf_vmlinux_value_type_id", c_uint32),
                ("inner_map_fd", c_uint32), ("map_flags", c_uint32), ("map_extra", c_uint64),
                ("numa_node", c_uint32), ("map_ifindex", c_uint32)]


_own = None


def _lib():
    # our own handle: argtypes are per handle, so nothing else can clash with them
    global _own
    if _own is None:
        h = ctypes.CDLL(L.lib()._name, use_errno=True)
        h.bpf_map_create.restype = c_int
        h.bpf_map_create.argtypes = [c_int, c_char_p, c_uint32, c_uint32, c_uint32, c_void_p]
        _own = h
    return _own


def map_create(mtype: int, name: str, key_size: int, value_size: int, max_entries: int,
               flags: int = 0, extra: int = 0) -> int:
    opts = _CreateOpts(sz=ctypes.sizeof(_CreateOpts), map_flags=flags, map_extra=extra)
    fd = _lib().bpf_map_create(mtype, name.encode(), key_size, value_size, max_entries, ctypes.byref(opts))
    if fd < 0:
        raise L.LibbpfError(f"bpf_map_create {name}", ctypes.get_errno())
    return fd


@dataclass
class Rule:
    pattern: str                  # "name", "*.name" or "prefix*"
    action: str
    to: str | None = None
    priority: int = 100
    qtypes: int = ALL_QTYPES

    @property
    def kind(self) -> str:
        if self.pattern.endswith("*"):
            return "prefix"
        return "wildcard" if self.pattern.startswith("*.") else "exact"

    @property
    def labels(self) -> list[bytes]:
        return [x.encode() for x in self.pattern.lower().removeprefix("*.").split(".")]

    def wire(self) -> bytes:
        return b"".join(bytes([len(x)]) + x for x in self.labels) + b"\0"

    def matches(self, labels: list[bytes]) -> bool:
        """labels: the query name's labels, ASCII lower-cased (the kernel hashes
        labels, so a label holding a dot is one label; prefix rules compare
        the dotted text, which cannot tell the two apart)."""
        mine = self.labels
        if self.kind == "prefix":
            return b".".join(labels).startswith(self.pattern.lower()[:-1].encode())
        if self.kind == "wildcard":
            return len(labels) > len(mine) and labels[-len(mine):] == mine
        return labels == mine


def install(lo, rules: list[Rule], gen: int = 0, seeds: tuple[int, int] = SEEDS) -> None:
    """Rules into generation gen (inner maps created fresh), then make it live."""
    vlay = lo.btf.struct("nexus_policy_val")
    klay_p = lo.btf.struct("nexus_prefix_key")
    verlay = lo.btf.struct("nexus_policy_verify")
    prefix_max = len(klay_p.unpack(bytes(klay_p.size))["data"])
    fds = []
    try:
        rules_fd = map_create(MAP_HASH, "fz_pol_rules", 16, vlay.size, 1024, F_NO_PREALLOC)
        fds.append(rules_fd)
        bloom_fd = map_create(MAP_BLOOM, "fz_pol_bloom", 0, 16, 1024, 0, 3)
        fds.append(bloom_fd)
        prefix_fd = map_create(MAP_LPM_TRIE, "fz_pol_prefix", klay_p.size, vlay.size, 256, F_NO_PREALLOC)
        fds.append(prefix_fd)
        rules_m, bloom_m, prefix_m = L.MapHandle(rules_fd, owned=False), L.MapHandle(bloom_fd, owned=False), \
            L.MapHandle(prefix_fd, owned=False)
        for i, r in enumerate(rules):
            family, addr = 0, bytes(16)
            if r.to:
                a = ipaddress.ip_address(r.to)
                family = a.version
                addr = a.packed.ljust(16, b"\0")
            val = vlay.pack({"priority": r.priority, "pat_len": len(r.pattern), "qtypes": r.qtypes,
                             "action": ACTIONS[r.action], "family": family, "addr": list(addr),
                             "rule_id": i + 1})
            if r.kind == "prefix":
                text = r.pattern.lower()[:-1].encode()[:prefix_max]
                key = klay_p.pack({"prefixlen": len(text) * 8, "data": list(text.ljust(prefix_max, b"\0"))})
                prefix_m.update(key, val)
                continue
            kind = hashing.WILDCARD if r.kind == "wildcard" else hashing.EXACT
            key = hashing.key(r.labels, kind, seeds)
            rules_m.update(key, val)
            bloom_m.update(b"", key)
            if r.action == "allow":
                w = r.wire()
                with lo.map("nexus_pol_verify") as vm:
                    vm.update(key, verlay.pack({"len": len(w), "wire": list(w.ljust(256, b"\0"))}))
        gkey = struct.pack("<I", gen)
        for outer, fd in (("nexus_pol_rules", rules_fd), ("nexus_pol_bloom", bloom_fd),
                          ("nexus_pol_prefix", prefix_fd)):
            with lo.map(outer) as m:
                m.update(gkey, struct.pack("<I", fd))
        slay = lo.btf.struct("nexus_policy_state")
        with lo.map("nexus_pol_state") as m:
            m.update(b"\0" * 4, slay.pack({"seed1": seeds[0], "seed2": seeds[1], "gen": gen, "active": 1}))
    finally:
        for fd in fds:
            os.close(fd)          # the outer maps hold the inner ones now


def decide(rules: list[Rule], labels: list[bytes]) -> Rule | None:
    """The deciding rule, by the contract: lower priority wins, then the longer
    pattern, then allow. (qtype filtering is not used by these tests: every rule
    covers every type.)"""
    hits = [r for r in rules if r.matches(labels)]
    if not hits:
        return None
    return min(hits, key=lambda r: (r.priority, -len(r.pattern), r.action != "allow"))
