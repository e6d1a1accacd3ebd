"""enforce status / stats / events, and the enforcer's section of `stats`."""
from __future__ import annotations

import ipaddress
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from nexusctl.engine.objects import pin_dirs
from nexusctl.errors import OperationFailed
from nexusctl.features import enforce as feat
from nexusctl.tools.btf import BtfError, kernel_btf

PROTOCOLS = {6: "tcp", 17: "udp"}
POLL_MS = 200


def _maps(app) -> Path:
    return pin_dirs(app.config.pin_root)["maps"]


def _btf(app):
    """The enforcer object's BTF as the kernel holds it for the loaded programs (maps
    keep the BTF of the object that first created them, which may be older)."""
    progs = pin_dirs(app.config.pin_root)["progs"]
    L = app.runner.libbpf
    for prog in (*feat.CG_PROGS.values(), *feat.LSM_PROGS.values()):
        pin = progs / prog
        if not pin.exists():
            continue
        fd = L.obj_get(str(pin))
        try:
            btf_id = L.prog_info(fd).get("btf_id")
        finally:
            os.close(fd)
        if btf_id:
            return kernel_btf(btf_id)
    return None


def _enum(btf, name: str, prefix: str) -> dict[int, str]:
    try:
        return {v: n.removeprefix(prefix).lower() for n, v in btf.enum(name).items() if not n.endswith("__MAX")}
    except (BtfError, AttributeError):
        return {}


def _counters(app, btf) -> dict[str, int]:
    names = _enum(btf, "nexus_enf_counter", "NEXUS_ENF_CNT_") if btf else {}
    out = {n: 0 for n in names.values()}
    pin = _maps(app) / feat.COUNTERS_MAP
    if not pin.exists():
        return out
    L = app.runner.libbpf
    with L.MapHandle.pinned(str(pin)) as m:
        for k, vals in m.items():
            i = int.from_bytes(k, "little")
            if i in names:
                out[names[i]] = sum(int.from_bytes(v, "little") for v in vals)
    return out


def _cgroup_stats(app, btf) -> dict[int, dict]:
    pin = _maps(app) / feat.CG_STATS_MAP
    if not pin.exists() or btf is None:
        return {}
    layout = btf.struct("nexus_enf_cg_stats")
    L = app.runner.libbpf
    out = {}
    with L.MapHandle.pinned(str(pin)) as m:
        for i in range(len(app.config.enforce.cgroups)):
            vals = m.lookup(i.to_bytes(4, "little")) or []
            total: dict[str, int] = {}
            for v in vals:
                for f, n in layout.unpack(v).items():
                    total[f] = total.get(f, 0) + n
            out[i] = total
    return out


def _comm(raw) -> str:
    if isinstance(raw, (bytes, bytearray)):
        return raw.split(b"\0", 1)[0].decode(errors="replace")
    return str(raw)


def denied_processes(app, limit: int = 50) -> list[dict]:
    """Processes with DNS sends refused or audited, from the shared nexus_procs map."""
    pin = _maps(app) / "nexus_procs"
    if not pin.exists():
        return []
    L = app.runner.libbpf
    rows = []
    with L.MapHandle.pinned(str(pin)) as m:
        if not m.info.get("btf_id"):
            return []
        from nexusctl.tools.btf import Layout
        layout = Layout(kernel_btf(m.info["btf_id"]), m.info["btf_value_type_id"])
        for k, v in m.items(limit=1_000_000):
            s = layout.unpack(v)
            if s.get("dns_denied"):
                rows.append({"pid": int.from_bytes(k, "little"), "comm": _comm(s["comm"]),
                             "dns_denied": s["dns_denied"]})
    rows.sort(key=lambda r: (-r["dns_denied"], r["pid"]))
    return rows[:limit]


def stats_section(app) -> dict:
    """The `enforce` section of `stats --json`."""
    cfg = app.config
    btf = _btf(app)
    per_cg = _cgroup_stats(app, btf)
    cgroups = []
    for i, cg in enumerate(cfg.enforce.cgroups):
        s = per_cg.get(i, {})
        cgroups.append({"path": cg.path, "checked": s.get("checked", 0), "allowed": s.get("allowed", 0),
                        "denied": s.get("denied", 0), "audited": s.get("audited", 0)})
    return {"enabled": cfg.enforce.enabled, "mode": cfg.enforce.mode, "counters": _counters(app, btf),
            "cgroups": cgroups, "processes": denied_processes(app)}


def status(app) -> dict:
    cfg = app.config
    e = cfg.enforce
    state = app.state()
    from nexusctl.tools import perf
    lsm_ok, lsm_why = feat.lsm_support(cfg.build_dir)
    in_lsm = e.enabled and e.lsm != "off" and lsm_ok
    mount = feat.cgroup2_mount()
    out = {"enabled": e.enabled, "mode": e.mode, "ports": list(e.ports),
           "hooks": "lsm" if in_lsm else "cgroup",
           "lsm": {"setting": e.lsm, "usable": lsm_ok, "detail": lsm_why},
           "cgroup2": str(mount) if mount else None, "cgroups": [], "attachments": []}
    links_dir = pin_dirs(cfg.pin_root)["links"]
    for name, rec in sorted(state.links.items()):
        if not name.startswith("enforce_"):
            continue
        live = perf.link_prog_id(rec.get("pin", "")) is not None
        out["attachments"].append({"kind": rec.get("kind"), "target": rec.get("target"), "prog": rec.get("prog"),
                                   "link": name, "attached": live})
    if mount is None:
        return out
    policies = _policy_ids(app)
    for r in feat.resolve_cgroups(cfg, must_exist=False):
        hooks = {}
        if not in_lsm and r.attached:
            for hook in feat.CGROUP_HOOKS:
                pin = links_dir / feat.link_name(r.dir, hook)
                hooks[hook] = pin.exists() and perf.link_prog_id(str(pin)) is not None
        out["cgroups"].append({
            "path": r.path, "dir": str(r.dir), "exists": r.cgroup_id is not None, "cgroup_id": r.cgroup_id,
            "level": r.level, "allow": r.allow, "ports": r.ports,
            "covered_by": str(r.covered_by) if r.covered_by else None,
            "hooks": hooks, "policy_loaded": r.cgroup_id in policies})
    return out


def _policy_ids(app) -> set[int]:
    pin = _maps(app) / feat.POLICY_MAP
    if not pin.exists():
        return set()
    L = app.runner.libbpf
    with L.MapHandle.pinned(str(pin)) as m:
        return {int.from_bytes(k, "little") for k in m.keys()}


# ---------------------------------------------------------------- events

class EventDecoder:
    def __init__(self, app, btf):
        self.layout = btf.struct("nexus_enf_event")
        self.hooks = _enum(btf, "nexus_enf_hook", "NEXUS_ENF_HOOK_")
        self.verdicts = {v: n.removeprefix("NEXUS_ENF_").lower()
                         for n, v in btf.enum("nexus_enf_verdict").items()}
        self.paths = [c.path for c in app.config.enforce.cgroups]
        # bpf_ktime_get_ns is CLOCK_MONOTONIC: shift it onto the wall clock
        self.offset_ns = time.time_ns() - time.monotonic_ns()

    def __call__(self, raw: bytes) -> dict:
        ev = self.layout.unpack(raw)
        addr = b"".join(int(w).to_bytes(4, "little") for w in ev["addr"])
        dest = ipaddress.IPv4Address(addr[12:]) if ev["family"] == 4 else ipaddress.IPv6Address(addr)
        wall = (ev["time_ns"] + self.offset_ns) / 1e9
        idx = ev["policy"]
        return {
            "time": datetime.fromtimestamp(wall, timezone.utc).isoformat(timespec="microseconds"),
            "pid": ev["pid"], "tid": ev["tid"], "uid": ev["uid"], "comm": _comm(ev["comm"]),
            "thread_comm": _comm(ev["thread_comm"]),
            "destination": str(dest), "port": ev["port"], "family": ev["family"],
            "protocol": PROTOCOLS.get(ev["protocol"], str(ev["protocol"])),
            "hook": self.hooks.get(ev["hook"], str(ev["hook"])),
            "verdict": self.verdicts.get(ev["verdict"], str(ev["verdict"])),
            "cgroup_id": ev["cgroup_id"], "cgroup": self.paths[idx] if idx < len(self.paths) else None,
        }


def events(app, *, follow: bool = False, limit: int | None = None, timeout: float | None = None,
           on_event: Callable[[dict], None] | None = None) -> list[dict]:
    """Drain the denial ring buffer (what accumulated since the last reader), and with
    follow keep reading until limit events, timeout seconds, or Ctrl-C. Reading consumes:
    one reader gets each event."""
    pin = _maps(app) / feat.EVENTS_MAP
    btf = _btf(app)
    if not pin.exists() or btf is None:
        raise OperationFailed(f"the enforcer is not up (no {pin})",
                              "enable enforce in the config and run `nexusctl up`")
    from nexusctl.tools.ringbuf import RingBuffer
    decode = EventDecoder(app, btf)
    out: list[dict] = []

    def handle(raw: bytes) -> bool:
        ev = decode(raw)
        out.append(ev)
        if on_event:
            on_event(ev)
        return limit is not None and len(out) >= limit     # stop: the rest stays for the next reader

    L = app.runner.libbpf
    fd = L.obj_get(str(pin))
    try:
        with RingBuffer(fd, handle) as rb:
            if limit is None or limit > 0:
                rb.consume()
            end = time.monotonic() + timeout if timeout else None
            try:
                while follow and (limit is None or len(out) < limit):
                    if end is not None and time.monotonic() >= end:
                        break
                    rb.poll(POLL_MS)
            except KeyboardInterrupt:
                pass
    finally:
        os.close(fd)
    return out
