"""Metrics: tracepoints and perf events (bpf/nexus_metrics.c) feeding per-CPU
counters, per-interface and per-process figures, and CPU samples attributed
to nexus programs. `stats` and `metrics serve` read them (nexusctl.ops.stats,
nexusctl.ops.metrics).

Every program is attached through a pinned BPF link (links/metrics_*), so the
attachments outlive nexusctl and go away at `down`. Perf events are probed
when the plan is made: an event this host cannot open (hardware counters in a
VM without a virtual PMU) is reported as unavailable by doctor and status and
simply not attached; it is not an error.
"""
from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

from nexusctl.engine.actions import Action, Ctx
from nexusctl.engine.build import object_path
from nexusctl.features.base import ConfigWrite, ObjectSpec

# nexusctl.engine.objects and .links import the feature registry: import them lazily.


# arrays indexed by an enum: shown and migrated by enumerator name
MAP_KEY_ENUMS = {"nexus_mcounters": "nexus_mcounter", "nexus_samples": "nexus_perf_event"}

def pin_dirs(pin_root: Path) -> dict[str, Path]:
    from nexusctl.engine.objects import pin_dirs as _pin_dirs
    return _pin_dirs(pin_root)

OBJECT = "nexus_metrics"

# (link pin name, program, tracepoint category, tracepoint name)
TRACEPOINTS = [
    # exits first, so that no remembered send waits for an exit program that is not there yet
    ("metrics_sendto_exit", "nexus_send_ret", "syscalls", "sys_exit_sendto"),
    ("metrics_sendmsg_exit", "nexus_send_ret", "syscalls", "sys_exit_sendmsg"),
    ("metrics_sendmmsg_exit", "nexus_send_ret", "syscalls", "sys_exit_sendmmsg"),
    ("metrics_sendto", "nexus_sendto", "syscalls", "sys_enter_sendto"),
    ("metrics_sendmsg", "nexus_sendmsg", "syscalls", "sys_enter_sendmsg"),
    ("metrics_sendmmsg", "nexus_sendmmsg", "syscalls", "sys_enter_sendmmsg"),
    ("metrics_netif_rx", "nexus_netif_rx", "net", "netif_receive_skb"),
    ("metrics_tcp_state", "nexus_tcp_state", "sock", "inet_sock_set_state"),
]


@dataclass(frozen=True)
class PerfEvent:
    name: str               # config and output name (= enum nexus_perf_event name, lower-case)
    kind: str               # software | hardware
    type: int               # perf_event_attr.type
    config: int             # perf_event_attr.config
    prog: str


def _perf():
    from nexusctl.tools import perf
    return perf


def perf_events() -> list[PerfEvent]:
    p = _perf()
    return [
        PerfEvent("cpu_clock", "software", p.PERF_TYPE_SOFTWARE, p.PERF_COUNT_SW_CPU_CLOCK, "nexus_sw_clock"),
        PerfEvent("cycles", "hardware", p.PERF_TYPE_HARDWARE, p.PERF_COUNT_HW_CPU_CYCLES, "nexus_hw_cycles"),
        PerfEvent("instructions", "hardware", p.PERF_TYPE_HARDWARE, p.PERF_COUNT_HW_INSTRUCTIONS, "nexus_hw_insns"),
        PerfEvent("cache_misses", "hardware", p.PERF_TYPE_HARDWARE, p.PERF_COUNT_HW_CACHE_MISSES, "nexus_hw_cmiss"),
    ]


PROGRAMS = tuple(dict.fromkeys([t[1] for t in TRACEPOINTS] +
                               ["nexus_sw_clock", "nexus_hw_cycles", "nexus_hw_insns", "nexus_hw_cmiss"]))

OBJECTS = [ObjectSpec(OBJECT, PROGRAMS, lambda c: c.metrics.enabled,
                      "metrics: DNS sends and TLS connects per process, rx per interface, CPU sampling")]


def map_sizes(cfg) -> dict[str, int]:
    # nexus_procs is shared with cert/enforce: its size is this setting even when
    # metrics itself is off.
    return {"nexus_procs": cfg.metrics.max_processes, "nexus_netif": cfg.metrics.max_interfaces}


def config_values(cfg) -> dict:
    """Field values of struct nexus_metrics_config (bpf/include/nexus_metrics.h)."""
    m = cfg.metrics
    return {
        "dns_ports": list(cfg.dns.ports),
        "tls_ports": list(m.tls_ports),
        "iface_filter": 1 if m.interfaces else 0,
        "ifaces": [n.encode() for n in m.interfaces],
    }


def config_writes(cfg) -> list[ConfigWrite]:
    if not cfg.metrics.enabled:
        return []
    return [ConfigWrite("nexus_mconfig", "nexus_metrics_config", OBJECT, config_values(cfg))]


# ---------------------------------------------------------------- perf events

def online_cpus() -> list[int]:
    """CPUs perf events are opened on (/sys/devices/system/cpu/online, e.g. "0-3,6")."""
    try:
        text = Path("/sys/devices/system/cpu/online").read_text().strip()
    except OSError:
        return list(range(os.cpu_count() or 1))
    cpus: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            cpus.extend(range(int(a), int(b) + 1))
        elif part:
            cpus.append(int(part))
    return cpus


def _why_unavailable(reason: str, ev: PerfEvent) -> str:
    names = {os.strerror(errno.ENOENT): "ENOENT", os.strerror(errno.EOPNOTSUPP): "EOPNOTSUPP"}
    if ev.kind == "hardware" and reason in names:
        return f"no hardware PMU ({names[reason]}; usual in a VM without a virtual PMU)"
    return reason


def probe_perf_events(cfg=None) -> list[dict]:
    """Each event: can it be opened here, and does the config ask for it?"""
    out = []
    wanted = _wanted_events(cfg) if cfg is not None else None
    for ev in perf_events():
        ok, reason = _perf().perf_event_available(ev.type, ev.config)
        row = {"event": ev.name, "kind": ev.kind, "available": ok,
               "reason": "" if ok else _why_unavailable(reason, ev)}
        if wanted is not None:
            row["configured"] = ev.name in wanted
        out.append(row)
    return out


def _wanted_events(cfg) -> list[str]:
    m = cfg.metrics
    if not m.enabled or m.sample_frequency <= 0:
        return []
    return ["cpu_clock", *m.hardware_events]


def links(cfg) -> list:
    from nexusctl.engine.links import LinkSpec
    if not cfg.metrics.enabled:
        return []
    specs = [LinkSpec(name, prog, "tracepoint", f"{cat}:{tp}", tp=(cat, tp)) for name, prog, cat, tp in TRACEPOINTS]
    wanted = _wanted_events(cfg)
    freq = cfg.metrics.sample_frequency
    for ev in perf_events():
        if ev.name not in wanted:
            continue
        ok, _ = _perf().perf_event_available(ev.type, ev.config)
        if not ok:
            continue        # reported by doctor and status as unavailable
        for cpu in online_cpus():
            # the frequency is in the name: a new frequency is a new link, the old one is detached
            specs.append(LinkSpec(f"metrics_{ev.name}_{freq}hz_cpu{cpu}", ev.prog, "perf_event",
                                  f"{ev.name} cpu{cpu} @{freq}Hz", perf=(ev.type, ev.config, cpu, freq)))
    return specs


# ---------------------------------------------------------------- program ranges

class WriteProgRanges(Action):
    """Tell the sampling programs where the JIT put each pinned nexus program
    (nexus_prog_rng), so a CPU sample is attributed to the program it hit."""
    kind = "prog-ranges"

    def __init__(self, pin_root: Path, obj_path: Path):
        self.pin_root = pin_root
        self.obj_path = obj_path
        self.pin = pin_dirs(pin_root)["maps"] / "nexus_prog_rng"
        self._old: bytes | None = None

    def describe(self) -> str:
        return f"write the JIT address ranges of the programs in {pin_dirs(self.pin_root)['progs']} to {self.pin.name}"

    def _layout(self):
        from nexusctl.tools.btf import Btf
        return Btf.from_elf(self.obj_path).struct("nexus_prog_ranges")

    def _capacity(self, layout) -> int:
        btf = layout.btf
        member = next(m for m in layout.type.extra if m[0] == "r")
        return btf.resolve(member[1]).extra[2]

    def _wanted(self, ctx: Ctx) -> bytes:
        from nexusctl.engine import observe
        L = ctx.runner.libbpf
        layout = self._layout()
        cap = self._capacity(layout)
        ranges = []
        for _, fd in observe.pinned_programs(ctx.runner, pin_dirs(self.pin_root)["progs"]):
            pid = L.prog_info(fd)["id"]
            ranges += [{"start": a, "end": a + n, "prog_id": pid} for a, n in L.prog_jited_ranges(fd)]
        if len(ranges) > cap:
            ctx.warn(f"CPU samples are attributed to the first {cap} of {len(ranges)} program functions only")
            ranges = ranges[:cap]
        return layout.pack({"count": len(ranges), "r": ranges})

    def satisfied(self, ctx: Ctx) -> bool:
        if not self.pin.exists() or not self.obj_path.exists():
            return False
        with ctx.runner.libbpf.MapHandle.pinned(str(self.pin)) as m:
            return m.lookup(b"\0" * 4) == self._wanted(ctx)

    def apply(self, ctx: Ctx) -> None:
        ctx.runner.kernel_action(f"bpf_map_update_elem {self.pin} (program JIT ranges)")
        with ctx.runner.libbpf.MapHandle.pinned(str(self.pin)) as m:
            self._old = m.lookup(b"\0" * 4)
            m.update(b"\0" * 4, self._wanted(ctx))

    def undo(self, ctx: Ctx) -> None:
        if self._old is not None and self.pin.exists():
            with ctx.runner.libbpf.MapHandle.pinned(str(self.pin)) as m:
                m.update(b"\0" * 4, self._old)


def extra_actions(cfg, state) -> list[Action]:
    if not _wanted_events(cfg):
        return []
    return [WriteProgRanges(cfg.pin_root, object_path(cfg.build_dir, OBJECT))]


# ---------------------------------------------------------------- doctor and status

def doctor_checks(app) -> list[dict]:
    from nexusctl.ops.doctor import check
    rows = []
    try:
        tfs = _perf().tracefs()
    except OSError:
        tfs = None
    for cat, tp in dict.fromkeys((t[2], t[3]) for t in TRACEPOINTS):
        ok = bool(tfs and (tfs / "events" / cat / tp).is_dir())
        rows.append(check(f"tracepoint {cat}:{tp}", ok, "metrics" if ok else "missing (or tracefs not mounted)",
                          "mount -t tracefs nodev /sys/kernel/tracing (up does it); the kernel may predate it",
                          required=False, group="metrics"))
    for ev in probe_perf_events():
        if ev["available"]:
            detail = f"{ev['kind']} event: available"
        else:
            detail = f"{ev['kind']} event: unavailable ({ev['reason']})"
        fix = ("not needed: CPU sampling uses cpu_clock; give the VM a virtual PMU for hardware events"
               if ev["kind"] == "hardware" else "check kernel.perf_event_paranoid and CONFIG_PERF_EVENTS")
        rows.append(check(f"perf event {ev['event']}", ev["available"], detail, fix, required=False, group="metrics"))
    return rows


def status_fields(app, state) -> dict:
    """`status` gets "perf_events": which events can be sampled here, which the
    config asks for, and on which CPUs each is attached."""
    try:
        cfg = app.config
    except Exception:  # noqa: BLE001 - status must not fail on this
        cfg = None
    rows = probe_perf_events(cfg)
    attached: dict[str, list[int]] = {}
    for name in state.links:
        for ev in rows:
            m = re.fullmatch(rf"metrics_{ev['event']}_\d+hz_cpu(\d+)", name)
            if m:
                attached.setdefault(ev["event"], []).append(int(m.group(1)))
    unavailable: dict[str, list[str]] = {}
    for ev in rows:
        ev["attached_cpus"] = sorted(attached.get(ev["event"], []))
        if not ev["available"] and ev.get("configured"):
            unavailable.setdefault(ev["reason"], []).append(ev["event"])
    notes = [f"perf events unavailable here, not sampled: {', '.join(evs)}: {why}"
             for why, evs in unavailable.items()]
    return {"perf_events": rows, "notes": notes}
