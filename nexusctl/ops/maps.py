"""maps list / dump / get: pinned maps decoded with the BTF the kernel holds for them."""
from __future__ import annotations

from pathlib import Path

from nexusctl.engine import maplayout, observe
from nexusctl.engine.objects import pin_dirs
from nexusctl.errors import OperationFailed, UsageError
from nexusctl.ops.deploy import _count_entries
from nexusctl.tools.btf import KIND_ENUM, BtfError, Layout, kernel_btf

NOT_ITERABLE = {"ringbuf", "user_ringbuf", "perf_event_array", "bloom_filter", "prog_array"}


def _pin(app, name: str) -> Path:
    d = pin_dirs(app.config.pin_root)["maps"]
    p = d / name
    if not p.exists():
        known = sorted(x.name for x in d.iterdir()) if d.exists() else []
        raise UsageError(f"no pinned map named {name!r}" + (f"; pinned: {', '.join(known)}" if known else
                                                             " (nothing is pinned; run `nexusctl up`)"),
                         "see `nexusctl maps list`")
    return p


def list_maps(app) -> list[dict]:
    d = pin_dirs(app.config.pin_root)["maps"]
    out = []
    if not d.exists():
        return out
    L = app.runner.libbpf
    for pin in sorted(d.iterdir()):
        info = observe.pinned_map(app.runner, pin)
        if info:
            out.append({"name": pin.name, "type": info["type"], "id": info["id"],
                        "entries": _count_entries(L, pin, info), "max_entries": info["max_entries"],
                        "key_size": info["key_size"], "value_size": info["value_size"]})
    return out


# Maps whose u32 keys are the values of an enum (array keys must be plain u32
# for the kernel, so the enum is named here): keys show and parse by name.
KEY_ENUMS = maplayout.KEY_ENUMS       # features add theirs with MAP_KEY_ENUMS (see maplayout.key_enums)


def _layouts(info: dict):
    if not info.get("btf_id") or not info.get("btf_value_type_id"):
        return None, None
    btf = kernel_btf(info["btf_id"])
    key = Layout(btf, info["btf_key_type_id"], enum_names=True) if info.get("btf_key_type_id") else None
    enum = {maplayout.kernel_name(k): v for k, v in maplayout.key_enums().items()}.get(info["name"])
    if enum:
        try:
            key = Layout(btf, btf.find(enum, KIND_ENUM).id, enum_names=True)
        except BtfError:
            pass
    return key, Layout(btf, info["btf_value_type_id"], enum_names=True)


def _decode(layout: Layout | None, raw: bytes):
    if layout is None:
        return raw.hex()
    try:
        return layout.unpack(raw)
    except BtfError:
        return raw.hex()


def _sum(values: list):
    first = values[0]
    if isinstance(first, int) and not isinstance(first, bool):
        return sum(values)
    if isinstance(first, dict):
        return {k: _sum([v[k] for v in values]) for k in first}
    if isinstance(first, list):
        return [_sum([v[i] for v in values]) for i in range(len(first))]
    return first


def _value(layout, raw, percpu: bool, split: bool):
    if not percpu:
        return _decode(layout, raw)
    per = [_decode(layout, r) for r in raw]
    if split:
        return [{"cpu": i, "value": v} for i, v in enumerate(per)]
    return _sum(per)


def dump(app, name: str, split_cpus: bool = False, limit: int | None = None) -> dict:
    pin = _pin(app, name)
    L = app.runner.libbpf
    with L.MapHandle.pinned(str(pin)) as m:
        info = m.info
        if info["type"] in NOT_ITERABLE:
            raise UsageError(f"map {name} is a {info['type']}: it has no entries to dump")
        klay, vlay = _layouts(info)
        entries = []
        for k, v in m.items(limit):
            entries.append({"key": _decode(klay, k), "value": _value(vlay, v, m.percpu, split_cpus)})
    return {"map": name, "type": info["type"], "percpu": m.percpu, "split_cpus": split_cpus,
            "max_entries": info["max_entries"], "entries": entries}


def get(app, name: str, key: str, split_cpus: bool = False) -> dict:
    pin = _pin(app, name)
    L = app.runner.libbpf
    with L.MapHandle.pinned(str(pin)) as m:
        klay, vlay = _layouts(m.info)
        try:
            if klay is None:
                raw = bytes.fromhex(key.removeprefix("hex:").removeprefix("0x"))
            else:
                raw = klay.parse_key(key)
        except (BtfError, ValueError) as e:
            raise UsageError(f"bad key for map {name}: {e}") from None
        if len(raw) != m.key_size:
            raise UsageError(f"bad key for map {name}: need {m.key_size} bytes, got {len(raw)}")
        v = m.lookup(raw)
        if v is None:
            raise OperationFailed(f"map {name} has no entry for key {key}")
        return {"map": name, "key": _decode(klay, raw), "value": _value(vlay, v, m.percpu, split_cpus)}
