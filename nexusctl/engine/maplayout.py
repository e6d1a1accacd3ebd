"""Map layouts: what an object declares, what is pinned, whether they agree, and
how entries are carried from an old map into a new one when they do not.

A pinned map is reused across loads and reloads only when its definition (type,
key and value sizes, max_entries, flags) *and* the BTF of its key and value are
unchanged. libbpf itself compares only the sizes, so a value struct whose fields
moved but kept its size would be reused with the old BTF: `maps dump` would decode
it wrongly and the new programs would read the old bytes as new fields. Both
cases are a layout change here.

On a change the map is replaced by a new one created from the object (so it has
the new BTF) and the entries are migrated field by field, by name, using the BTF
of both sides: a field that kept its name keeps its value (ints may widen or
narrow when the value fits), a new field starts at zero, a removed field is
dropped. Arrays keyed by an enum (the counters) are remapped by enumerator name,
so inserting a counter in the middle does not shift the others. Map types that
hold no durable state, or whose entries cannot be read back (ring buffers, prog
arrays, bloom filters, ...), are recreated empty, with a warning.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from nexusctl.tools.btf import (KIND_ARRAY, KIND_DATASEC, KIND_ENUM, KIND_ENUM64, KIND_FLOAT, KIND_FWD,
                                KIND_INT, KIND_PTR, KIND_STRUCT, KIND_UNION, KIND_VAR, Btf, BtfError,
                                kernel_btf)

# Arrays whose u32 index is the value of an enum (array keys must be plain u32 for
# the kernel's BTF check, so the enum is named here). Features may add theirs with
# a module-level MAP_KEY_ENUMS = {map name: enum name}.
KEY_ENUMS = {"nexus_counters": "nexus_counter", "nexus_latency": "nexus_lat_path"}

MAP_NAME_LEN = 15          # the kernel keeps BPF_OBJ_NAME_LEN - 1 characters of a map's name

# Map types whose entries user space can iterate and write back.
MIGRATABLE = {"hash", "array", "percpu_hash", "percpu_array", "lru_hash", "lru_percpu_hash", "lpm_trie"}
ARRAYS = {"array", "percpu_array"}
PERCPU = {"percpu_hash", "percpu_array", "lru_percpu_hash"}


def key_enums() -> dict[str, str]:
    from nexusctl.features import FEATURES
    out = dict(KEY_ENUMS)
    for f in FEATURES:
        out.update(getattr(f, "MAP_KEY_ENUMS", {}))
    return out


def kernel_name(name: str) -> str:
    return name[:MAP_NAME_LEN]


# ---------------------------------------------------------------- signatures

def signature(btf: Btf, tid: int, _seen: frozenset = frozenset()) -> tuple:
    """A comparable description of a type's layout: sizes, offsets, field names and
    signedness, recursively; the names of the types themselves do not matter."""
    t = btf.resolve(tid) if tid else None
    if t is None:
        return ("void",)
    if t.kind == KIND_INT:
        enc = t.extra >> 24
        return ("int", t.size_or_type, bool(enc & 1), t.extra & 0xFF)
    if t.kind in (KIND_ENUM, KIND_ENUM64):
        return ("enum", t.size_or_type)
    if t.kind == KIND_FLOAT:
        return ("float", t.size_or_type)
    if t.kind == KIND_PTR:
        return ("ptr",)
    if t.kind == KIND_ARRAY:
        elem, _, n = t.extra
        return ("array", n, signature(btf, elem, _seen))
    if t.kind in (KIND_STRUCT, KIND_UNION):
        if t.name.startswith("bpf_"):          # bpf_spin_lock, bpf_timer, ...: kernel-managed
            return ("special", t.name, t.size_or_type)
        if t.id in _seen:
            return ("recursive", t.name)
        seen = _seen | {t.id}
        return ("struct" if t.kind == KIND_STRUCT else "union", t.size_or_type,
                tuple((name, off, bits, signature(btf, mt, seen)) for name, mt, off, bits in t.extra))
    if t.kind == KIND_FWD:
        return ("fwd", t.name)
    return ("kind", t.kind)


def enum_signature(btf: Btf, enum: str) -> tuple | None:
    try:
        return tuple(sorted(btf.enum(enum).items()))
    except BtfError:
        return None


def describe_change(old: tuple | None, new: tuple | None, what: str) -> str:
    """One phrase for how a key or value layout changed."""
    if old and new and old[0] == new[0] == "struct":
        o = {m[0]: m for m in old[2]}
        n = {m[0]: m for m in new[2]}
        parts = []
        added = [k for k in n if k not in o]
        removed = [k for k in o if k not in n]
        changed = [k for k in n if k in o and (o[k][3] != n[k][3] or o[k][2] != n[k][2])]
        moved = [k for k in n if k in o and k not in changed and o[k][1] != n[k][1]]
        if added:
            parts.append("added " + ", ".join(added))
        if removed:
            parts.append("removed " + ", ".join(removed))
        if changed:
            parts.append("retyped " + ", ".join(changed))
        if moved:
            parts.append("moved " + ", ".join(moved))
        if old[1] != new[1]:
            parts.append(f"{old[1]} → {new[1]} bytes")
        return f"{what} fields: " + "; ".join(parts or ["reordered"])
    return f"{what} type changed"


# ---------------------------------------------------------------- declarations

@dataclass(frozen=True)
class MapDecl:
    """A map as an object declares it (after any max_entries override)."""
    name: str
    type: str
    type_id: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    key_sig: tuple | None = None
    value_sig: tuple | None = None
    enum_sig: tuple | None = None        # enumerators of the key enum, for enum-indexed arrays
    source: str = ""                     # object file it came from
    key_tid: int = field(default=0, compare=False)
    value_tid: int = field(default=0, compare=False)

    def definition(self) -> dict:
        return {"type": self.type, "key_size": self.key_size, "value_size": self.value_size,
                "max_entries": self.max_entries, "flags": self.flags}

    def same_layout(self, other: "MapDecl") -> bool:
        return (self.definition() == other.definition() and self.key_sig == other.key_sig
                and self.value_sig == other.value_sig and self.enum_sig == other.enum_sig)


def _btf_map_types(btf: Btf) -> dict[str, tuple[int, int]]:
    """{map name: (key type id, value type id)} from the object's .maps section."""
    out: dict[str, tuple[int, int]] = {}
    for t in btf.types[1:]:
        if t is None or t.kind != KIND_DATASEC or t.name != ".maps":
            continue
        for var_id, _, _ in t.extra or []:
            var = btf.types[var_id]
            if var is None or var.kind != KIND_VAR:
                continue
            st = btf.resolve(var.size_or_type)
            if st is None or st.kind != KIND_STRUCT:
                continue
            key = value = 0
            for mname, mt, _, _ in st.extra:
                ptr = btf.resolve(mt)
                if ptr is None or ptr.kind != KIND_PTR:
                    continue
                if mname == "key":
                    key = ptr.size_or_type
                elif mname == "value":
                    value = ptr.size_or_type
            out[var.name] = (key, value)
    return out


@lru_cache(maxsize=64)
def _declared(path: str, _mtime: int, sizes: tuple) -> tuple[MapDecl, ...]:
    from nexusctl.tools import libbpf as L
    btf = Btf.from_elf(path)
    types = _btf_map_types(btf)
    enums = key_enums()
    sizes_d = dict(sizes)
    out = []
    with L.BpfObject(path) as obj:
        for name, m in obj.user_maps():
            if name.endswith("_scratch"):
                continue                 # per-object working memory, never pinned (kernel.is_private_map)
            if name in sizes_d:
                obj.set_map_max_entries(m, sizes_d[name])
            d = obj.map_def(m)
            ktid, vtid = types.get(name, (0, 0))
            esig = enum_signature(btf, enums[name]) if name in enums else None
            out.append(MapDecl(name, L.MAP_TYPES.get(d["type_id"], str(d["type_id"])), d["type_id"],
                               d["key_size"], d["value_size"], d["max_entries"], d["flags"],
                               signature(btf, ktid) if ktid else None, signature(btf, vtid) if vtid else None,
                               esig, path, ktid, vtid))
    return tuple(out)


def declared_maps(obj_path: Path, map_sizes: dict[str, int] | None = None) -> list[MapDecl]:
    """The user maps an object declares, read with libbpf (sizes) and its BTF (layouts)."""
    p = str(obj_path)
    return list(_declared(p, os.stat(p).st_mtime_ns, tuple(sorted((map_sizes or {}).items()))))


@dataclass
class Pinned:
    """A pinned map as the kernel has it, with the layouts from the BTF it was created with."""
    info: dict
    key_sig: tuple | None
    value_sig: tuple | None
    enum_sig: tuple | None
    btf: Btf | None


def pinned_layout(info: dict, name: str) -> Pinned:
    btf = None
    ksig = vsig = esig = None
    if info.get("btf_id"):
        try:
            btf = kernel_btf(info["btf_id"])
        except OSError:
            btf = None
    if btf is not None:
        if info.get("btf_key_type_id"):
            ksig = signature(btf, info["btf_key_type_id"])
        if info.get("btf_value_type_id"):
            vsig = signature(btf, info["btf_value_type_id"])
        enum = key_enums().get(name)
        if enum:
            esig = enum_signature(btf, enum)
    return Pinned(info, ksig, vsig, esig, btf)


def compare(pinned: Pinned, want: MapDecl) -> list[str]:
    """Why the pinned map cannot serve `want` (empty: it can be reused as is)."""
    info = pinned.info
    why = []
    if info["type_id"] != want.type_id:
        why.append(f"type {info['type']} → {want.type}")
    for k in ("key_size", "value_size", "max_entries"):
        if info[k] != getattr(want, k):
            why.append(f"{k} {info[k]} → {getattr(want, k)}")
    if info["flags"] != want.flags:
        why.append(f"flags {info['flags']:#x} → {want.flags:#x}")
    # Layouts count only when both sides have BTF (a map created without BTF has none).
    if pinned.key_sig is not None and want.key_sig is not None and pinned.key_sig != want.key_sig:
        why.append(describe_change(pinned.key_sig, want.key_sig, "key"))
    if pinned.value_sig is not None and want.value_sig is not None and pinned.value_sig != want.value_sig:
        why.append(describe_change(pinned.value_sig, want.value_sig, "value"))
    if pinned.enum_sig is not None and want.enum_sig is not None and pinned.enum_sig != want.enum_sig:
        o = {k: v for k, v in pinned.enum_sig if not k.endswith("__MAX")}     # the count sentinel
        n = {k: v for k, v in want.enum_sig if not k.endswith("__MAX")}
        added = [k for k in n if k not in o]
        removed = [k for k in o if k not in n]
        moved = [k for k in n if k in o and o[k] != n[k]]
        parts = ([f"added {', '.join(added)}"] if added else []) + \
                ([f"removed {', '.join(removed)}"] if removed else []) + \
                ([f"renumbered {', '.join(moved)}"] if moved else [])
        why.append("key enum: " + "; ".join(parts or ["changed"]))
    return why


def migratable(pinned: Pinned, want: MapDecl) -> tuple[bool, str]:
    """Can the entries be carried over? (False, why) when the map must start empty."""
    old_type = pinned.info["type"]
    if old_type not in MIGRATABLE:
        return False, f"{old_type} maps hold no entries user space can copy"
    if want.type not in MIGRATABLE:
        return False, f"{want.type} maps cannot be filled from user space"
    if (old_type in ARRAYS) != (want.type in ARRAYS) or (old_type == "lpm_trie") != (want.type == "lpm_trie"):
        return False, f"{old_type} → {want.type} has no meaningful key mapping"
    if pinned.info["key_size"] != want.key_size and (pinned.key_sig is None or want.key_sig is None):
        return False, "the key size changed and the map has no BTF to convert keys with"
    if pinned.info["value_size"] != want.value_size and (pinned.value_sig is None or want.value_sig is None):
        return False, "the value size changed and the map has no BTF to convert values with"
    return True, ""


# ---------------------------------------------------------------- conversion

class Unconvertible(ValueError):
    pass


def _int_spec(btf: Btf, tid: int):
    t = btf.resolve(tid)
    if t is None:
        return None
    if t.kind == KIND_INT:
        return t.size_or_type, bool((t.extra >> 24) & 1)
    if t.kind in (KIND_ENUM, KIND_ENUM64):
        return t.size_or_type, bool(t.kind_flag)
    return None


def _plan_copy(ob: Btf, otid: int, nb: Btf, ntid: int, ooff: int, noff: int, ops: list) -> None:
    """Append copy operations that carry a value of type otid at ooff into ntid at noff."""
    if signature(ob, otid) == signature(nb, ntid):
        size = nb.size(ntid)
        if size:
            ops.append(("copy", ooff, noff, size))
        return
    ot, nt = ob.resolve(otid), nb.resolve(ntid)
    if ot is None or nt is None:
        return
    oi, ni = _int_spec(ob, otid), _int_spec(nb, ntid)
    if oi and ni:
        ops.append(("int", ooff, oi[0], oi[1], noff, ni[0], ni[1]))
        return
    if ot.kind == nt.kind == KIND_STRUCT:
        olds = {m[0]: m for m in ot.extra if m[0]}
        for name, mt, moff, bits in nt.extra:
            if not name or name not in olds:
                continue                      # new field: starts at zero
            _, omt, omoff, obits = olds[name]
            if bits or obits or moff % 8 or omoff % 8:
                continue                      # bitfields: only carried when the whole struct is unchanged
            _plan_copy(ob, omt, nb, mt, ooff + omoff // 8, noff + moff // 8, ops)
        return
    if ot.kind == nt.kind == KIND_ARRAY:
        oe, _, on = ot.extra
        ne, _, nn = nt.extra
        osz, nsz = ob.size(oe), nb.size(ne)
        for i in range(min(on, nn)):
            _plan_copy(ob, oe, nb, ne, ooff + i * osz, noff + i * nsz, ops)
        return
    # anything else (a union that changed, a struct that became an int, ...) starts at zero


class Converter:
    """Turns an old key or value (bytes) into the new layout."""

    def __init__(self, old_btf: Btf | None, old_tid: int, old_size: int, new_btf: Btf | None, new_tid: int,
                 new_size: int):
        self.new_size = new_size
        self.identity = False
        self.ops: list = []
        if old_btf is None or new_btf is None or not old_tid or not new_tid:
            if old_size != new_size:
                raise Unconvertible("no BTF to convert with")
            self.identity = True
        elif signature(old_btf, old_tid) == signature(new_btf, new_tid):
            self.identity = True
        else:
            _plan_copy(old_btf, old_tid, new_btf, new_tid, 0, 0, self.ops)

    def __call__(self, raw: bytes) -> bytes:
        if self.identity:
            return raw[: self.new_size].ljust(self.new_size, b"\0")
        out = bytearray(self.new_size)
        for op in self.ops:
            if op[0] == "copy":
                _, o, n, size = op
                out[n:n + size] = raw[o:o + size]
            else:
                _, o, osz, osigned, n, nsz, nsigned = op
                v = int.from_bytes(raw[o:o + osz], "little", signed=osigned)
                try:
                    out[n:n + nsz] = v.to_bytes(nsz, "little", signed=nsigned)
                except OverflowError:
                    raise Unconvertible(f"value {v} does not fit in {nsz} bytes") from None
        return bytes(out)


@dataclass
class Migration:
    copied: int = 0
    dropped: int = 0
    reasons: list[str] = field(default_factory=list)

    def drop(self, why: str) -> None:
        self.dropped += 1
        if why not in self.reasons and len(self.reasons) < 5:
            self.reasons.append(why)


def key_remap(old: Pinned, want: MapDecl, new_btf: Btf) -> dict[int, int] | None:
    """old index → new index for enum-indexed arrays (by enumerator name)."""
    enum = key_enums().get(want.name)
    if not enum or old.btf is None:
        return None
    try:
        o, n = old.btf.enum(enum), new_btf.enum(enum)
    except BtfError:
        return None
    return {ov: n[name] for name, ov in o.items() if name in n and not name.endswith("__MAX")}


def migrate(L, old_fd: int, new_fd: int, old: Pinned, want: MapDecl, limit: int | None = None) -> Migration:
    """Copy every entry of the old map into the new one, converting keys and values."""
    new_btf = Btf.from_elf(want.source) if want.source else None
    kconv = Converter(old.btf, old.info.get("btf_key_type_id", 0), old.info["key_size"],
                      new_btf, want.key_tid, want.key_size)
    vconv = Converter(old.btf, old.info.get("btf_value_type_id", 0), old.info["value_size"],
                      new_btf, want.value_tid, want.value_size)
    remap = key_remap(old, want, new_btf) if new_btf is not None else None
    res = Migration()
    src = L.MapHandle(old_fd, owned=False)
    dst = L.MapHandle(new_fd, owned=False)
    is_array = want.type in ARRAYS
    for k, v in src.items(limit):
        try:
            if remap is not None:
                idx = int.from_bytes(k[:4], "little")
                if idx not in remap:
                    res.drop("its enumerator no longer exists")
                    continue
                nk = remap[idx].to_bytes(want.key_size, "little")
            else:
                nk = kconv(k)
            if is_array and int.from_bytes(nk[:4], "little") >= want.max_entries:
                res.drop("index beyond the new max_entries")
                continue
            nv = [vconv(x) for x in v] if isinstance(v, list) else vconv(v)
            if is_array and _all_zero(nv):
                continue                      # arrays start zeroed: nothing to write
            dst.update(nk, nv)
            res.copied += 1
        except Unconvertible as e:
            res.drop(str(e))
        except OSError as e:
            import errno
            res.drop("the new map is full" if e.errno in (errno.E2BIG, errno.ENOSPC, errno.ENOMEM)
                     else os.strerror(e.errno or 0))
    return res


def _all_zero(v) -> bool:
    if isinstance(v, list):
        return all(not any(x) for x in v)
    return not any(v)
