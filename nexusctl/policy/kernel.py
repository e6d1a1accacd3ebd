"""The rule sets in the kernel (bpf/include/policy.h).

A full load builds a new generation: fresh inner maps (hash of exact/wildcard
keys, bloom filter, LPM trie of prefixes), filled with libbpf batch updates
(the hash) and plain updates (bloom, LPM: those map types have no batch
update), put into the idle slot of the outer arrays, then switched on with
one write of nexus_pol_state.gen. Queries see the old set or the new one,
never half of one. The old generation is then emptied and freed.
Single rules (`policy add/rm`) change the live generation in place.
"""
from __future__ import annotations

import ipaddress
import os
import struct
import time
from dataclasses import dataclass

import numpy as np

from nexusctl.engine import faults
from nexusctl.engine.objects import pin_dirs
from nexusctl.errors import OperationFailed
from nexusctl.policy import hashing
from nexusctl.policy.rules import EXACT, PREFIX, PREFIX_MAX, WILDCARD, Attrs, pattern_kind
from nexusctl.policy.store import Source
from nexusctl.tools.btf import kernel_btf

MAPS = ("nexus_pol_rules", "nexus_pol_bloom", "nexus_pol_prefix", "nexus_pol_state", "nexus_pol_verify")
KEY_SIZE = 16
PREFIX_KEY_SIZE = 4 + PREFIX_MAX
BLOOM_HASHES = 3                      # POL_BLOOM_HASHES
PREFIX_RULES_MAX = 65536              # NEXUS_PREFIX_RULES_MAX
BATCH = 65536
BLOOM_FILL_BATCH = 200                # <= BLOOM_FILL_MAX in nexus_dns_xdp.c; fits a test-run buffer
KINDS = {EXACT: hashing.EXACT, WILDCARD: hashing.WILDCARD}


def wire(name: str) -> bytes:
    return b"".join(bytes([len(x)]) + x.encode() for x in name.split(".") if x) + b"\0"


def _memlock(fd: int) -> int | None:
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("memlock:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


@dataclass
class LoadResult:
    rules: int
    prefix_rules: int
    allow_rules: int
    generation: int
    seconds: float
    hash_seconds: float
    fill_seconds: float
    memory_bytes: int | None

    def to_json(self) -> dict:
        out = dict(self.__dict__)
        out["bytes_per_rule"] = round(self.memory_bytes / self.rules, 1) if self.memory_bytes and self.rules else None
        return out


class PolicyKernel:
    """The pinned policy maps of one pin root."""

    def __init__(self, runner, pin_root, max_rules: int, bloom: bool = True):
        self.L = runner.libbpf
        self.runner = runner
        d = pin_dirs(pin_root)["maps"]
        missing = [m for m in MAPS if not (d / m).exists()]
        if missing:
            raise OperationFailed(f"the policy maps are not pinned ({', '.join(missing)} missing)",
                                  "run `nexusctl up` with an interface in the config first")
        self.maps = {m: self.L.MapHandle.pinned(str(d / m)) for m in MAPS}
        btf = kernel_btf(self.maps["nexus_pol_state"].info["btf_id"])
        self.val_layout = btf.struct("nexus_policy_val")
        self.state_layout = btf.struct("nexus_policy_state")
        self.verify_layout = btf.struct("nexus_policy_verify")
        self.max_rules = max_rules
        self.bloom = bloom
        self.pin_root = pin_root

    def close(self) -> None:
        for m in self.maps.values():
            m.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ state
    def state(self) -> dict:
        st = self.state_layout.unpack(self.maps["nexus_pol_state"].lookup(b"\0" * 4))
        if not st["seed1"] or not st["seed2"]:
            # seeds: random per host, chosen once, kept as long as the pins live
            st["seed1"] = int.from_bytes(os.urandom(8), "little") | 1
            st["seed2"] = int.from_bytes(os.urandom(8), "little") | 1
            self._write_state(st)
        return st

    def _write_state(self, st: dict) -> None:
        self.maps["nexus_pol_state"].update(b"\0" * 4, self.state_layout.pack(st))

    def seeds(self) -> tuple[int, int]:
        st = self.state()
        return st["seed1"], st["seed2"]

    def _inner_fd(self, outer: str, gen: int) -> int | None:
        v = self.maps[outer].lookup(gen.to_bytes(4, "little"))
        if v is None:
            return None
        return self.L.map_fd_by_id(int.from_bytes(v[:4], "little"))

    def _slot_loaded(self, gen: int) -> bool:
        fd = self._inner_fd("nexus_pol_rules", gen)
        if fd is None:
            return False
        os.close(fd)
        return True

    def live_counts(self) -> dict:
        st = self.state()
        out = {"generation": st["gen"], "active": bool(st["active"]), "loaded": self._slot_loaded(st["gen"])}
        for outer, name in (("nexus_pol_rules", "rules"), ("nexus_pol_prefix", "prefix_rules")):
            fd = self._inner_fd(outer, st["gen"])
            if fd is None:
                out[name] = 0
                continue
            with self.L.MapHandle(fd) as m:
                out[name] = m.count()
                if name == "rules":
                    out["memory_bytes"] = _memlock(fd)
        return out

    # ------------------------------------------------------------ values
    def _values(self, attrs: Attrs, pat_lens: np.ndarray, rule_id: int) -> bytes:
        """One value per pattern: the group's value with each pattern's length patched in."""
        base = np.frombuffer(attrs.value(self.val_layout, 0, rule_id), dtype=np.uint8)
        n = len(pat_lens)
        vals = np.tile(base, (n, 1))
        vals[:, 2] = pat_lens & 0xFF          # pat_len is the second u16 (offset 2)
        vals[:, 3] = pat_lens >> 8
        return vals.tobytes()

    # ------------------------------------------------------------ a whole set
    def load(self, sources: list[Source], progress=None) -> LoadResult:
        t0 = time.monotonic()
        st = self.state()
        seeds = st["seed1"], st["seed2"]
        new_gen = 1 - (st["gen"] & 1) if self._slot_loaded(st["gen"]) else (st["gen"] & 1)
        L = self.L
        fds = {}
        try:
            fds["rules"] = L.map_create(L.MAP_HASH, "nexus_pol_r", KEY_SIZE, self.val_layout.size,
                                        self.max_rules, L.BPF_F_NO_PREALLOC)
            fds["bloom"] = L.map_create(L.MAP_BLOOM_FILTER, "nexus_pol_b", 0, KEY_SIZE, self.max_rules, 0,
                                        BLOOM_HASHES)
            fds["prefix"] = L.map_create(L.MAP_LPM_TRIE, "nexus_pol_p", PREFIX_KEY_SIZE, self.val_layout.size,
                                         PREFIX_RULES_MAX, L.BPF_F_NO_PREALLOC)
        except OSError as e:
            for fd in fds.values():
                os.close(fd)
            raise OperationFailed(f"cannot create the policy maps: {e}") from None
        rules_m = L.MapHandle(fds["rules"])
        bloom_m = L.MapHandle(fds["bloom"])
        prefix_m = L.MapHandle(fds["prefix"])
        hash_s = fill_s = 0.0
        n_rules = n_allow = 0
        prefixes: dict[str, tuple[Attrs, int]] = {}
        allows: dict[bytes, bytes] = {}
        bloom_keys: list[bytes] = []
        try:
            rule_id = 0
            for src in sources:
                for g in src.groups:
                    rule_id += 1
                    by_kind = split_kinds(g.patterns)
                    for kind in (EXACT, WILDCARD):
                        names, plens = by_kind[kind]
                        if not names:
                            continue
                        items = names
                        t = time.monotonic()
                        keys = hashing.keys_for_names(names, KINDS[kind], seeds)
                        if plens is None:          # exact names: the pattern is the body
                            lens = np.fromiter(map(len, names), dtype=np.uint16, count=len(names))
                        else:
                            lens = np.asarray(plens, dtype=np.uint16)
                        vals = self._values(g.attrs, lens, rule_id)
                        hash_s += time.monotonic() - t
                        t = time.monotonic()
                        vs = self.val_layout.size
                        for i in range(0, len(items), BATCH):
                            j = min(i + BATCH, len(items))
                            rules_m.update_batch(keys[i * KEY_SIZE:j * KEY_SIZE], vals[i * vs:j * vs], j - i)
                            if progress:
                                progress(j - i)
                        if self.bloom:
                            bloom_keys.append(keys)
                        if g.attrs.action == "allow":
                            for i, body in enumerate(names):
                                allows[keys[i * KEY_SIZE:(i + 1) * KEY_SIZE]] = wire(body)
                        fill_s += time.monotonic() - t
                        n_rules += len(items)
                    for body, plen in zip(*by_kind[PREFIX]):
                        prefixes[body] = (g.attrs, plen)
            self._fill_prefixes(prefix_m, prefixes)
            if self.bloom:
                t = time.monotonic()
                self._fill_bloom(fds["bloom"], b"".join(bloom_keys), new_gen)
                fill_s += time.monotonic() - t
            # allow rules' patterns first: the verify map is shared by both generations
            for k, w in allows.items():
                self.maps["nexus_pol_verify"].update(k, self.verify_layout.pack({"len": len(w), "wire": w}))
            n_allow = len(allows)
            mem = _memlock(fds["rules"])
            faults.step_done("policy: new generation built")
            # the switch: inner maps into the idle slot, then one write of gen
            gkey = new_gen.to_bytes(4, "little")
            try:
                self.maps["nexus_pol_rules"].update(gkey, fds["rules"].to_bytes(4, "little"))
                if not self.bloom:
                    self.maps["nexus_pol_bloom"].delete(gkey)   # no filter: every suffix is looked up
                self.maps["nexus_pol_prefix"].update(gkey, fds["prefix"].to_bytes(4, "little"))
            except OSError as e:
                raise OperationFailed(
                    f"the kernel refused the new rule maps ({e.strerror or e}): policy.max_rules probably "
                    f"changed since the maps were created", "run `nexusctl down` then `nexusctl up` to resize") from None
            faults.step_done("policy: new generation in the idle slots")
            old_gen = st["gen"]
            # an empty set is not active: queries then skip the label hashing and the walk
            st.update(gen=new_gen, active=int(n_rules + len(prefixes) > 0))
            self.runner.kernel_action(f"policy: generation {new_gen} live ({n_rules} rules)")
            self._write_state(st)
            faults.step_done("policy: switched")
            if old_gen != new_gen:
                self._drop_generation(old_gen, keep_allows=set(allows))
                faults.step_done("policy: old generation dropped")
        finally:
            for m in (rules_m, bloom_m, prefix_m):
                m.close()
        return LoadResult(n_rules, len(prefixes), n_allow, new_gen, round(time.monotonic() - t0, 3),
                          round(hash_s, 3), round(fill_s, 3), mem)

    def _fill_bloom(self, bloom_fd: int, keys: bytes, gen: int) -> None:
        """Push keys into a bloom filter. The filter goes into the idle slot first (no
        query reads that slot), then nexus_bloom_fill, run with BPF_PROG_TEST_RUN on
        buffers of keys, pushes them: a few thousand runs instead of a syscall per key.
        Without the helper program (an older object), one update per key."""
        gkey = gen.to_bytes(4, "little")
        self.maps["nexus_pol_bloom"].update(gkey, bloom_fd.to_bytes(4, "little"))
        n = len(keys) // KEY_SIZE
        prog = pin_dirs(self.pin_root)["progs"] / "nexus_bloom_fill"
        if prog.exists():
            fd = self.L.obj_get(str(prog))
            try:
                for i in range(0, n, BLOOM_FILL_BATCH):
                    j = min(i + BLOOM_FILL_BATCH, n)
                    frame = struct.pack("<II", gen, j - i) + keys[i * KEY_SIZE:j * KEY_SIZE]
                    res = self.L.prog_test_run(fd, frame, out_size=len(frame) + 256)
                    pushed = struct.unpack_from("<I", res.data_out, 4)[0]
                    if pushed != j - i:
                        raise OperationFailed(f"the bloom filter took {pushed} of {j - i} keys")
            finally:
                os.close(fd)
            return
        with self.L.MapHandle(os.dup(bloom_fd)) as b:
            for i in range(n):
                b.push(keys[i * KEY_SIZE:(i + 1) * KEY_SIZE])

    def _drop_generation(self, gen: int, keep_allows: set[bytes]) -> None:
        gkey = gen.to_bytes(4, "little")
        for outer in ("nexus_pol_rules", "nexus_pol_bloom", "nexus_pol_prefix"):
            self.maps[outer].delete(gkey)       # the kernel frees it once no program uses it
        verify = self.maps["nexus_pol_verify"]
        for k in list(verify.keys()):
            if k not in keep_allows:
                verify.delete(k)

    def _prefix_value(self, attrs: Attrs, plen: int) -> bytes:
        return attrs.value(self.val_layout, plen)

    def _fill_prefixes(self, m, prefixes: dict[str, tuple[Attrs, int]]) -> None:
        """Each LPM entry carries the best rule along its chain of shorter prefixes,
        because the trie returns only the longest match."""
        for body in prefixes:
            best = None
            for other, (attrs, plen) in prefixes.items():
                if body.startswith(other):
                    if best is None or attrs.better_than(best[0], plen, best[1]):
                        best = (attrs, plen)
            raw = body.encode()
            key = (len(raw) * 8).to_bytes(4, "little") + raw.ljust(PREFIX_MAX, b"\0")
            m.update(key, self._prefix_value(*best))

    # ------------------------------------------------------------ one rule
    def _live(self) -> tuple[dict, int]:
        st = self.state()
        if not self._slot_loaded(st["gen"]):
            # no generation yet: make an empty one the live one
            self.load([])
            st = self.state()
        return st, st["gen"]

    def _activate(self, st: dict) -> None:
        if not st["active"]:
            st["active"] = 1
            self._write_state(st)

    def add(self, pattern: str, attrs: Attrs, all_prefixes: dict[str, tuple[Attrs, int]]) -> None:
        st, gen = self._live()
        kind, body = pattern_kind(pattern)
        if kind == PREFIX:
            fd = self._inner_fd("nexus_pol_prefix", gen)
            with self.L.MapHandle(fd) as m:
                self._fill_prefixes(m, {**all_prefixes, body: (attrs, len(pattern))})
            self._activate(st)
            return
        key = hashing.key([x.encode() for x in body.split(".")], KINDS[kind], (st["seed1"], st["seed2"]))
        if attrs.action == "allow":
            w = wire(body)
            self.maps["nexus_pol_verify"].update(key, self.verify_layout.pack({"len": len(w), "wire": w}))
        fd = self._inner_fd("nexus_pol_rules", gen)
        with self.L.MapHandle(fd) as m:
            m.update(key, attrs.value(self.val_layout, len(pattern)))
        if self.bloom:
            bfd = self._inner_fd("nexus_pol_bloom", gen)
            if bfd is not None:
                with self.L.MapHandle(bfd) as b:
                    b.push(key)
        self._activate(st)

    def remove(self, pattern: str, all_prefixes: dict[str, tuple[Attrs, int]]) -> bool:
        st, gen = self._live()
        kind, body = pattern_kind(pattern)
        if kind == PREFIX:
            fd = self._inner_fd("nexus_pol_prefix", gen)
            with self.L.MapHandle(fd) as m:
                raw = body.encode()
                found = m.delete((len(raw) * 8).to_bytes(4, "little") + raw.ljust(PREFIX_MAX, b"\0"))
                rest = {k: v for k, v in all_prefixes.items() if k != body}
                self._fill_prefixes(m, rest)
            return found
        key = hashing.key([x.encode() for x in body.split(".")], KINDS[kind], (st["seed1"], st["seed2"]))
        fd = self._inner_fd("nexus_pol_rules", gen)
        with self.L.MapHandle(fd) as m:
            found = m.delete(key)
        self.maps["nexus_pol_verify"].delete(key)
        return found           # the bloom keeps the key: a harmless "maybe" for that suffix


def split_kinds(patterns: list[str]) -> dict[str, tuple[list[str], list[int]]]:
    """(bodies, pattern lengths) per kind. Patterns are already validated: one
    without '*' is an exact name, which is nearly every one in a big list."""
    out: dict[str, tuple[list[str], list[int]]] = {EXACT: ([], []), WILDCARD: ([], []), PREFIX: ([], [])}
    if not any("*" in p for p in patterns):
        return {**out, EXACT: (patterns, None)}
    for p in patterns:
        kind, body = pattern_kind(p) if "*" in p else (EXACT, p)
        out[kind][0].append(body)
        out[kind][1].append(len(p))
    return out


def address_family(addr: str) -> int:
    return ipaddress.ip_address(addr).version
