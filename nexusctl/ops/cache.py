"""cache list / cache flush: the in-kernel DNS answer cache (map nexus_cache)."""
from __future__ import annotations

import struct
import time

import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from nexusctl.engine.objects import pin_dirs
from nexusctl.errors import OperationFailed
from nexusctl.tools.btf import Layout, kernel_btf

MAP = "nexus_cache"
NS = 1_000_000_000


def _open(app):
    pin = pin_dirs(app.config.pin_root)["maps"] / MAP
    if not pin.exists():
        raise OperationFailed(f"no answer cache is pinned at {pin}", "run `nexusctl up` (with an interface) first")
    return app.runner.libbpf.MapHandle.pinned(str(pin))


def _layouts(m):
    btf = kernel_btf(m.info["btf_id"])
    return Layout(btf, m.info["btf_key_type_id"]), Layout(btf, m.info["btf_value_type_id"])


def wire_name(raw: bytes) -> str:
    try:
        return dns.name.from_wire(raw, 0)[0].to_text()
    except Exception:  # noqa: BLE001 - a damaged key is shown, not fatal
        return raw.rstrip(b"\0").hex()


def decode_records(key: dict, val: dict, now_ns: int) -> list[str]:
    """Rebuild the message the entry answers with (TTLs aged) and list its records."""
    name = key["name"]
    end = name.index(b"\0") + 1 if b"\0" in name else len(name)
    data = bytearray(val["data"][: val["data_len"]])
    age = max(0, (now_ns - val["inserted_ns"]) // NS)
    for off, ttl in zip(val["ttl_off"][: val["n_ttl"]], val["ttl_orig"][: val["n_ttl"]]):
        data[off:off + 4] = struct.pack("!I", max(0, ttl - age))
    hdr = struct.pack("!HHHHHH", 0, 0x8000 | val["flags"], 1, val["ancount"], val["nscount"], val["arcount"])
    wire = hdr + name[:end] + struct.pack("!HH", key["qtype"], key["qclass"]) + bytes(data)
    try:
        msg = dns.message.from_wire(wire)
    except Exception as e:  # noqa: BLE001
        return [f"(undecodable: {e})"]
    return [line for section in (msg.answer, msg.authority, msg.additional)
            for rrset in section for line in rrset.to_text().splitlines()]


def list_entries(app, limit: int | None = None, with_records: bool = True) -> dict:
    now = time.monotonic_ns()
    out = []
    with _open(app) as m:
        klay, vlay = _layouts(m)
        for k, v in m.items(limit):
            key, val = klay.unpack(k), vlay.unpack(v)
            e = {"name": wire_name(key["name"]),
                 "qtype": dns.rdatatype.to_text(key["qtype"]),
                 "qclass": dns.rdataclass.to_text(key["qclass"]),
                 "do": bool(key["do_bit"]),
                 "rcode": dns.rcode.to_text(val["flags"] & 0xF),
                 "records": val["ancount"] + val["nscount"] + val["arcount"],
                 "bytes": val["data_len"],
                 "age_s": max(0, (now - val["inserted_ns"]) // NS),
                 "expires_in_s": max(0, (val["expires_ns"] - now) // NS)}
            if with_records:
                e["answer"] = decode_records(key, val, now)
            out.append(e)
        max_entries = m.info["max_entries"]
    out.sort(key=lambda e: (e["name"], e["qtype"]))
    return {"entries": out, "count": len(out), "max_entries": max_entries}


def flush(app, name: str | None = None) -> dict:
    if app.dry_run:
        return {"changed": False, "dry_run": True, "would_flush": list_entries(app, with_records=False)["count"]}
    removed = 0
    want = dns.name.from_text(name).canonicalize().to_wire() if name else None
    with _open(app) as m:
        klay, _ = _layouts(m)
        keys = list(m.keys())
        for k in keys:
            if want is not None:
                raw = klay.unpack(k)["name"]
                if raw[: len(want)] != want or (len(raw) > len(want) and raw[len(want)] != 0):
                    continue
            if m.delete(k):
                removed += 1
    app.runner.kernel_action(f"deleted {removed} entries from {MAP}")
    return {"changed": removed > 0, "removed": removed}
