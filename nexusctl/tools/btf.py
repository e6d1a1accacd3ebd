"""A small BTF reader: struct layouts and enums from a compiled BPF object.

nexusctl does not mirror kernel-side structs by hand. It reads them from the
.BTF section of the objects it built, so packing the config map or decoding a
cache entry follows the C definition exactly (Cilium's alignchecker idea,
taken one step further: there is nothing to check because nothing is copied).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_FWD, KIND_TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC = 9, 10, 11, 12, 13, 14, 15
KIND_FLOAT, KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 16, 17, 18, 19
_MODIFIERS = {KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG}


class BtfError(ValueError):
    pass


@dataclass
class BtfType:
    id: int
    kind: int
    name: str
    size_or_type: int
    kind_flag: bool
    vlen: int
    extra: object = None     # kind-specific


def _elf_section(data: bytes, wanted: str) -> bytes:
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise BtfError("not a 64-bit little-endian ELF object")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def sh(i):
        return struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)

    str_off, str_size = sh(shstrndx)[4], sh(shstrndx)[5]
    names = data[str_off:str_off + str_size]
    for i in range(shnum):
        h = sh(i)
        end = names.index(b"\0", h[0])
        if names[h[0]:end].decode() == wanted:
            return data[h[4]:h[4] + h[5]]
    raise BtfError(f"no {wanted} section (was the object built with -g?)")


class Btf:
    def __init__(self, raw: bytes):
        magic, version, flags, hdr_len, type_off, type_len, str_off, str_len = \
            struct.unpack_from("<HBBIIIII", raw, 0)
        if magic != 0xEB9F:
            raise BtfError("bad BTF magic")
        types = raw[hdr_len + type_off: hdr_len + type_off + type_len]
        self.strings = raw[hdr_len + str_off: hdr_len + str_off + str_len]
        self.types: list[BtfType | None] = [None]   # id 0 is void
        self.by_name: dict[tuple[str, int], int] = {}
        off = 0
        while off < len(types):
            name_off, info, st = struct.unpack_from("<III", types, off)
            off += 12
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            kflag = bool(info >> 31)
            extra = None
            if kind == KIND_INT:
                extra = struct.unpack_from("<I", types, off)[0]
                off += 4
            elif kind == KIND_ARRAY:
                extra = struct.unpack_from("<III", types, off)   # elem type, index type, nelems
                off += 12
            elif kind in (KIND_STRUCT, KIND_UNION):
                members = []
                for _ in range(vlen):
                    mn, mt, mo = struct.unpack_from("<III", types, off)
                    off += 12
                    if kflag:
                        members.append((self._str(mn), mt, mo & 0xFFFFFF, mo >> 24))
                    else:
                        members.append((self._str(mn), mt, mo, 0))
                extra = members
            elif kind == KIND_ENUM:
                vals = []
                for _ in range(vlen):
                    en, ev = struct.unpack_from("<Ii", types, off)
                    off += 8
                    vals.append((self._str(en), ev))
                extra = vals
            elif kind == KIND_ENUM64:
                vals = []
                for _ in range(vlen):
                    en, lo, hi = struct.unpack_from("<III", types, off)
                    off += 12
                    vals.append((self._str(en), lo | (hi << 32)))
                extra = vals
            elif kind == KIND_FUNC_PROTO:
                off += 8 * vlen
            elif kind == KIND_VAR:
                extra = struct.unpack_from("<I", types, off)[0]          # linkage
                off += 4
            elif kind == KIND_DATASEC:
                extra = [struct.unpack_from("<III", types, off + 12 * i) for i in range(vlen)]  # (var, off, size)
                off += 12 * vlen
            elif kind == KIND_DECL_TAG:
                off += 4
            t = BtfType(len(self.types), kind, self._str(name_off), st, kflag, vlen, extra)
            self.types.append(t)
            if t.name:
                self.by_name.setdefault((t.name, kind), t.id)

    def _str(self, off: int) -> str:
        end = self.strings.index(b"\0", off)
        return self.strings[off:end].decode()

    @classmethod
    def from_elf(cls, path: str | Path) -> "Btf":
        return _btf_from_elf(str(path), Path(path).stat().st_mtime_ns)

    # ------------------------------------------------------------ queries
    def find(self, name: str, kind: int) -> BtfType:
        tid = self.by_name.get((name, kind))
        if tid is None:
            raise BtfError(f"type {name} not found in BTF")
        return self.types[tid]

    def resolve(self, tid: int) -> BtfType:
        t = self.types[tid]
        while t is not None and t.kind in _MODIFIERS:
            t = self.types[t.size_or_type]
        return t

    def size(self, tid: int) -> int:
        t = self.resolve(tid)
        if t.kind in (KIND_INT, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64, KIND_FLOAT):
            return t.size_or_type
        if t.kind == KIND_PTR:
            return 8
        if t.kind == KIND_ARRAY:
            elem, _, n = t.extra
            return self.size(elem) * n
        raise BtfError(f"type {t.name or t.id} has no size")

    def enum(self, name: str) -> dict[str, int]:
        try:
            t = self.find(name, KIND_ENUM)
        except BtfError:
            t = self.find(name, KIND_ENUM64)
        return dict(t.extra)

    def struct(self, name: str) -> "Layout":
        return Layout(self, self.find(name, KIND_STRUCT).id)


@lru_cache(maxsize=32)
def _btf_from_elf(path: str, _mtime: int) -> Btf:
    return Btf(_elf_section(Path(path).read_bytes(), ".BTF"))


@lru_cache(maxsize=64)
def kernel_btf(btf_id: int) -> Btf:
    """BTF the kernel holds under an id (from map_info/prog_info), cached per process."""
    from nexusctl.tools import libbpf
    return Btf(libbpf.btf_raw_by_id(btf_id))


class Layout:
    """Pack/unpack one type as nested dicts (arrays as lists, char arrays as bytes).
    With enum_names, enum values unpack to their names (for display)."""

    def __init__(self, btf: Btf, tid: int, enum_names: bool = False):
        self.btf = btf
        self.tid = tid
        self.size = btf.size(tid)
        self.enum_names = enum_names

    @property
    def type(self) -> BtfType:
        return self.btf.resolve(self.tid)

    def fields(self) -> list[str]:
        return [m[0] for m in self.btf.resolve(self.tid).extra]

    def pack(self, values: dict) -> bytes:
        buf = bytearray(self.size)
        self._pack_into(buf, 0, self.tid, values, "")
        return bytes(buf)

    def unpack(self, raw: bytes) -> dict:
        if len(raw) < self.size:
            raise BtfError(f"value of {len(raw)} bytes is shorter than the struct ({self.size})")
        return self._unpack(raw, 0, self.tid)

    def _pack_into(self, buf: bytearray, off: int, tid: int, value, path: str) -> None:
        t = self.btf.resolve(tid)
        if t.kind in (KIND_STRUCT, KIND_UNION):
            if not isinstance(value, dict):
                raise BtfError(f"{path or t.name}: expected a mapping")
            names = {m[0]: m for m in t.extra}
            for k, v in value.items():
                if k not in names:
                    raise BtfError(f"{path + '.' if path else ''}{k}: no such field in struct {t.name}")
                _, mt, moff, bits = names[k]
                if bits:
                    raise BtfError(f"{k}: bitfields are not supported")
                self._pack_into(buf, off + moff // 8, mt, v, f"{path}.{k}" if path else k)
        elif t.kind == KIND_ARRAY:
            elem, _, n = t.extra
            esz = self.btf.size(elem)
            et = self.btf.resolve(elem)
            if isinstance(value, (bytes, bytearray)) and et.kind == KIND_INT and esz == 1:
                if len(value) > n:
                    raise BtfError(f"{path}: {len(value)} bytes do not fit in {n}")
                buf[off:off + len(value)] = value
                return
            if len(value) > n:
                raise BtfError(f"{path}: {len(value)} items do not fit in {n}")
            for i, v in enumerate(value):
                self._pack_into(buf, off + i * esz, elem, v, f"{path}[{i}]")
        elif t.kind in (KIND_INT, KIND_ENUM, KIND_ENUM64, KIND_PTR):
            size = self.btf.size(tid)
            signed = t.kind == KIND_INT and bool((t.extra >> 24) & 1) or (t.kind == KIND_ENUM and t.kind_flag)
            try:
                buf[off:off + size] = int(value).to_bytes(size, "little", signed=signed)
            except OverflowError:
                raise BtfError(f"{path}: {value} does not fit in {size} bytes") from None
        else:
            raise BtfError(f"{path}: cannot pack BTF kind {t.kind}")

    def _unpack(self, raw: bytes, off: int, tid: int):
        t = self.btf.resolve(tid)
        if t.kind in (KIND_STRUCT, KIND_UNION):
            out = {}
            for name, mt, moff, bits in t.extra:
                if bits:
                    word = int.from_bytes(raw[off + moff // 8: off + moff // 8 + 8].ljust(8, b"\0"), "little")
                    out[name] = (word >> (moff % 8)) & ((1 << bits) - 1)
                elif name:
                    out[name] = self._unpack(raw, off + moff // 8, mt)
            return out
        if t.kind == KIND_ARRAY:
            elem, _, n = t.extra
            esz = self.btf.size(elem)
            et = self.btf.resolve(elem)
            if et.kind == KIND_INT and esz == 1:
                return bytes(raw[off:off + n])
            return [self._unpack(raw, off + i * esz, elem) for i in range(n)]
        if t.kind in (KIND_INT, KIND_ENUM, KIND_ENUM64, KIND_PTR):
            size = self.btf.size(tid)
            signed = t.kind == KIND_INT and bool((t.extra >> 24) & 1)
            v = int.from_bytes(raw[off:off + size], "little", signed=signed)
            if self.enum_names and t.kind in (KIND_ENUM, KIND_ENUM64):
                for name, ev in t.extra:
                    if ev == v:
                        return name
            return v
        raise BtfError(f"cannot unpack BTF kind {t.kind}")

    def parse_key(self, text: str) -> bytes:
        """A key typed on the command line: enum name, integer, 0x/hex: bytes, or JSON for a struct."""
        import json as _json
        t = self.type
        s = text.strip()
        if s.startswith("hex:") or (s.startswith("0x") and len(s) > 2 + 2 * min(self.size, 8)):
            raw = bytes.fromhex(s.split(":", 1)[1] if s.startswith("hex:") else s[2:])
            if len(raw) != self.size:
                raise BtfError(f"key must be {self.size} bytes, got {len(raw)}")
            return raw
        if t.kind in (KIND_ENUM, KIND_ENUM64):
            names = {n.lower(): v for n, v in t.extra}
            low = s.lower()
            hits = [v for n, v in names.items() if n == low] or \
                [v for n, v in names.items() if n.endswith("_" + low)]
            if len(hits) == 1:
                return int(hits[0]).to_bytes(self.size, "little")
            try:
                return int(s, 0).to_bytes(self.size, "little")
            except ValueError:
                raise BtfError(f"{s!r} is not one of: " + ", ".join(n for n, _ in t.extra)) from None
        if t.kind == KIND_INT:
            try:
                return int(s, 0).to_bytes(self.size, "little", signed=bool((t.extra >> 24) & 1))
            except (ValueError, OverflowError):
                raise BtfError(f"{s!r} is not an integer that fits in {self.size} bytes") from None
        if t.kind in (KIND_STRUCT, KIND_UNION):
            try:
                return self.pack(_json.loads(s))
            except _json.JSONDecodeError:
                raise BtfError(f"key of struct {t.name} must be JSON, e.g. "
                               + _json.dumps({f: 0 for f in self.fields()[:2]})) from None
        raise BtfError(f"cannot parse a key of BTF kind {t.kind}")
