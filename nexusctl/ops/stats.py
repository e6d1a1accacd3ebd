"""stats: what the pinned maps say, read at call time.

- counters: nexus_counters (DNS programs) and nexus_mcounters (metrics
  tracepoints), per-CPU slots summed, named from the enums in the maps' BTF;
- latency: nexus_latency, one log2 histogram per path (enum nexus_lat_path:
  kernel = answered in XDP, resolver = query at XDP ingress to answer at TC
  egress). "dns" is both paths merged: every answered query is in exactly
  one of them;
- processes (nexus_procs), interfaces (nexus_netif), CPU samples
  (nexus_samples, nexus_prog_samp, nexus_prog_rng), map fill levels.

Every struct is decoded with the BTF the kernel holds for its map; nothing
here mirrors a C layout.
"""
from __future__ import annotations

import os
import time
from functools import lru_cache
from pathlib import Path

from nexusctl.engine import observe
from nexusctl.engine.objects import pin_dirs
from nexusctl.tools.btf import BtfError, kernel_btf

COUNTER_PREFIX = "NEXUS_CNT_"
COUNTER_ENUM = "nexus_counter"
HOST_COUNTER_PREFIX = "NEXUS_MCNT_"
HOST_COUNTER_ENUM = "nexus_mcounter"
LAT_PREFIX = "NEXUS_LAT_"
LAT_ENUM = "nexus_lat_path"
PERF_PREFIX = "NEXUS_PERF_"
PERF_ENUM = "nexus_perf_event"
DNS_FIELDS = ["queries", "blocked", "rate_limited", "malformed", "suspicious", "cache_hits", "cache_misses",
              "answered_in_kernel"]
POLICY_FIELDS = {"blocked": "policy_blocked", "redirected": "policy_redirected",
                 "synthesized": "policy_synthesized", "allowed": "policy_allowed"}
PROC_FIELDS = ["dns_queries", "cert_validations", "tls_connections", "dns_denied"]
QUANTILES = ((0.5, "p50"), (0.9, "p90"), (0.99, "p99"))
NS_PER_US = 1000


# ---------------------------------------------------------------- map access

def _pin(app, name: str) -> Path | None:
    p = pin_dirs(app.config.pin_root)["maps"] / name
    return p if p.exists() else None


def _btf(m):
    bid = m.info.get("btf_id")
    return kernel_btf(bid) if bid else None


def _enum_names(btf, enum: str, prefix: str) -> dict[int, str]:
    """{value: name} with the prefix stripped and lower-cased; the __MAX sentinel dropped."""
    if btf is None:
        return {}
    try:
        items = btf.enum(enum).items()
    except BtfError:
        return {}
    return {v: n.removeprefix(prefix).lower() for n, v in items if not n.endswith("__MAX")}


def _u64(raw: bytes) -> int:
    return int.from_bytes(raw[:8], "little")


def read_enum_counters(app, map_name: str, enum: str, prefix: str) -> dict[str, int]:
    """{counter name: sum over CPUs} of a per-CPU u64 array indexed by an enum."""
    pin = _pin(app, map_name)
    if pin is None:
        return {}
    L = app.runner.libbpf
    with L.MapHandle.pinned(str(pin)) as m:
        names = _enum_names(_btf(m), enum, prefix)
        out = {}
        for k, vals in m.items():
            idx = int.from_bytes(k, "little")
            if names and idx not in names:
                continue
            out[names.get(idx, f"counter_{idx}")] = sum(_u64(v) for v in vals)
    return out


def read_counters(app, map_name: str = "nexus_counters") -> dict[str, int]:
    """The DNS programs' counters (enum nexus_counter)."""
    return read_enum_counters(app, map_name, COUNTER_ENUM, COUNTER_PREFIX)


def read_host_counters(app) -> dict[str, int]:
    """The metrics tracepoints' counters (enum nexus_mcounter)."""
    return read_enum_counters(app, "nexus_mcounters", HOST_COUNTER_ENUM, HOST_COUNTER_PREFIX)


# ---------------------------------------------------------------- latency

def read_latency(app) -> dict[str, dict]:
    """{path: {"buckets": [n per log2 bucket], "count", "sum_ns"}}, summed over CPUs.
    Bucket i counts durations in [2^i, 2^(i+1)) ns (bucket 0 also 0 and 1 ns)."""
    pin = _pin(app, "nexus_latency")
    if pin is None:
        return {}
    L = app.runner.libbpf
    out = {}
    with L.MapHandle.pinned(str(pin)) as m:
        btf = _btf(m)
        if btf is None:
            return {}
        layout = btf.struct("nexus_latency")
        names = _enum_names(btf, LAT_ENUM, LAT_PREFIX)
        for k, vals in m.items():
            idx = int.from_bytes(k, "little")
            if idx not in names:
                continue
            h = {"buckets": None, "count": 0, "sum_ns": 0}
            for raw in vals:
                v = layout.unpack(raw)
                h["buckets"] = [a + b for a, b in zip(h["buckets"], v["buckets"])] if h["buckets"] else list(v["buckets"])
                h["count"] += v["count"]
                h["sum_ns"] += v["sum_ns"]
            out[names[idx]] = h
    return out


def merge_histograms(hs: list[dict]) -> dict:
    hs = [h for h in hs if h and h.get("buckets")]
    if not hs:
        return {"buckets": [], "count": 0, "sum_ns": 0}
    n = max(len(h["buckets"]) for h in hs)
    buckets = [sum(h["buckets"][i] for h in hs if i < len(h["buckets"])) for i in range(n)]
    return {"buckets": buckets, "count": sum(h["count"] for h in hs), "sum_ns": sum(h["sum_ns"] for h in hs)}


def bucket_bounds(i: int) -> tuple[int, int]:
    """[low, high) in ns of log2 bucket i."""
    return (0 if i == 0 else 2 ** i), 2 ** (i + 1)


def quantile_ns(buckets: list[int], q: float) -> float | None:
    """The q-quantile, interpolated linearly inside its log2 bucket (like
    Prometheus' histogram_quantile); None for an empty histogram."""
    total = sum(buckets)
    if not total:
        return None
    rank = q * total
    acc = 0
    for i, n in enumerate(buckets):
        if n and acc + n >= rank:
            lo, hi = bucket_bounds(i)
            return lo + (hi - lo) * max(rank - acc, 0) / n
        acc += n
    return float(bucket_bounds(len(buckets) - 1)[1])


def latency_summary(h: dict) -> dict:
    """The contract's {"count", "p50", "p99", "buckets"} (µs), plus p90, mean and sum.
    count is the kernel's own count; buckets lists the non-empty ones."""
    buckets = h.get("buckets") or []
    out: dict = {"count": h.get("count", 0)}
    for q, key in QUANTILES:
        v = quantile_ns(buckets, q)
        out[key] = None if v is None else round(v / NS_PER_US, 3)
    out["mean"] = round(h["sum_ns"] / h["count"] / NS_PER_US, 3) if h.get("count") else None
    out["sum_us"] = round(h.get("sum_ns", 0) / NS_PER_US, 3)
    out["buckets"] = [{"from_us": bucket_bounds(i)[0] / NS_PER_US, "to_us": bucket_bounds(i)[1] / NS_PER_US,
                       "count": n} for i, n in enumerate(buckets) if n]
    return out


def histogram_summary(buckets: list[int], unit_scale: float = 1.0) -> dict:
    """p50/p90/p99 of log2 buckets (bucket i: [2^i, 2^(i+1)) ns), interpolated, times unit_scale."""
    out = {"count": sum(buckets)}
    for q, key in QUANTILES:
        v = quantile_ns(buckets, q)
        out[key] = None if v is None else round(v * unit_scale, 3)
    return out


# ---------------------------------------------------------------- processes

def _comm(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def read_processes(app, top: int | None = None) -> list[dict]:
    """Per-process figures from nexus_procs, busiest first (DNS queries, then TLS
    connections, certificates, denied sends)."""
    pin = _pin(app, "nexus_procs")
    if pin is None:
        return []
    L = app.runner.libbpf
    now = time.monotonic_ns()
    rows = []
    with L.MapHandle.pinned(str(pin)) as m:
        btf = _btf(m)
        if btf is None:
            return []
        layout = btf.struct("nexus_proc_stats")
        fields = layout.fields()
        for k, raw in m.items():
            v = layout.unpack(raw)
            row = {"pid": int.from_bytes(k, "little"), "comm": _comm(v["comm"])}
            row.update({f: v[f] for f in PROC_FIELDS if f in fields})
            if v.get("last_seen_ns"):
                row["idle_s"] = round(max(now - v["last_seen_ns"], 0) / 1e9, 1)
            rows.append(row)
    rows.sort(key=lambda r: (tuple(-r.get(f, 0) for f in PROC_FIELDS), r["pid"]))
    return rows if top is None else rows[:top]


# ---------------------------------------------------------------- interfaces

def netns_names() -> dict[int, str]:
    """{namespace inode: name} for /run/netns/*; the host's namespace (init's, or
    ours when init's cannot be read) is ""."""
    out = {}
    for host in ("/proc/1/ns/net", "/proc/self/ns/net"):
        try:
            out[os.stat(host).st_ino] = ""
            break
        except OSError:
            continue
    try:
        for p in Path("/run/netns").iterdir():
            try:
                out[p.stat().st_ino] = p.name
            except OSError:
                continue
    except OSError:
        pass
    return out


def read_interfaces(app) -> list[dict]:
    """Received packets and bytes per interface (nexus_netif), busiest first."""
    pin = _pin(app, "nexus_netif")
    if pin is None:
        return []
    L = app.runner.libbpf
    names = netns_names()
    rows = []
    with L.MapHandle.pinned(str(pin)) as m:
        btf = _btf(m)
        if btf is None:
            return []
        key_l, val_l = btf.struct("nexus_netif_key"), btf.struct("nexus_netif_stats")
        for k, vals in m.items():
            key = key_l.unpack(k)
            name, packets, nbytes = "", 0, 0
            for raw in vals:
                v = val_l.unpack(raw)
                name = name or _comm(v["name"])
                packets += v["packets"]
                nbytes += v["bytes"]
            ns = names.get(key["netns"])
            rows.append({"name": name or f"if{key['ifindex']}", "ifindex": key["ifindex"],
                         "netns": ns if ns is not None else f"ino:{key['netns']}", "netns_ino": key["netns"],
                         "rx_packets": packets, "rx_bytes": nbytes})
    rows.sort(key=lambda r: (-r["rx_bytes"], r["name"]))
    return rows


# ---------------------------------------------------------------- CPU samples

@lru_cache(maxsize=1)
def _perf_availability() -> dict[str, dict]:
    from nexusctl.features import metrics
    return {e["event"]: e for e in metrics.probe_perf_events()}


def _prog_names(app) -> dict[int, str]:
    progs = pin_dirs(app.config.pin_root)["progs"]
    L = app.runner.libbpf
    return {L.prog_info(fd)["id"]: pin.name for pin, fd in observe.pinned_programs(app.runner, progs)}


def read_cpu(app) -> dict:
    """CPU samples per perf event, and how many landed in each nexus program."""
    out = {"sample_frequency": app.config.metrics.sample_frequency, "events": []}
    pin = _pin(app, "nexus_samples")
    avail = _perf_availability()
    if pin is None:
        out["events"] = [{"event": n, "available": e["available"], "reason": e["reason"], "samples": 0,
                          "in_nexus": 0, "programs": {}} for n, e in avail.items()]
        return out
    L = app.runner.libbpf
    with L.MapHandle.pinned(str(pin)) as m:
        btf = _btf(m)
        layout = btf.struct("nexus_cpu_samples")
        events = _enum_names(btf, PERF_ENUM, PERF_PREFIX)
        per_event = {}
        for k, vals in m.items():
            idx = int.from_bytes(k, "little")
            if idx in events:
                s = [layout.unpack(v) for v in vals]
                per_event[idx] = (sum(x["samples"] for x in s), sum(x["in_nexus"] for x in s))
    nevents = max(events) + 1 if events else 0
    by_prog: dict[int, dict[str, int]] = {}
    rng_pin, samp_pin = _pin(app, "nexus_prog_rng"), _pin(app, "nexus_prog_samp")
    if rng_pin and samp_pin and nevents:
        with L.MapHandle.pinned(str(rng_pin)) as m:
            r = btf.struct("nexus_prog_ranges").unpack(m.lookup(b"\0" * 4))
        slots = [x["prog_id"] for x in r["r"][: r["count"]]]
        names = _prog_names(app)
        with L.MapHandle.pinned(str(samp_pin)) as m:
            for slot, prog_id in enumerate(slots):
                for ev in range(nevents):
                    vals = m.lookup((slot * nevents + ev).to_bytes(4, "little"))
                    n = sum(_u64(v) for v in vals) if vals else 0
                    if n:
                        name = names.get(prog_id, f"prog id {prog_id}")
                        d = by_prog.setdefault(ev, {})
                        d[name] = d.get(name, 0) + n
    for idx, name in sorted(events.items()):
        a = avail.get(name, {})
        samples, in_nexus = per_event.get(idx, (0, 0))
        out["events"].append({"event": name, "available": a.get("available", False), "reason": a.get("reason", ""),
                              "samples": samples, "in_nexus": in_nexus,
                              "programs": dict(sorted(by_prog.get(idx, {}).items(), key=lambda x: -x[1]))})
    return out


# ---------------------------------------------------------------- program cost

def read_programs(app) -> dict[str, dict]:
    """{pinned program: {"id", "type", "run_cnt", "run_time_ns"}} (the kernel counts
    runs and time only while BPF run-time stats are on)."""
    L = app.runner.libbpf
    out = {}
    for pin, fd in observe.pinned_programs(app.runner, pin_dirs(app.config.pin_root)["progs"]):
        i = L.prog_info(fd)
        out[pin.name] = {"id": i["id"], "type": i["type"], "run_cnt": i["run_cnt"], "run_time_ns": i["run_time_ns"]}
    return out


def program_costs(prev: dict, cur: dict, dt: float) -> list[dict]:
    """What each program cost between two read_programs() snapshots dt seconds
    apart: runs, time, ns per run and share of one CPU. Programs whose id changed
    (reloaded in between) are skipped."""
    out = []
    for name, c in cur.items():
        p = prev.get(name)
        if not p or p["id"] != c["id"] or dt <= 0:
            continue
        runs = c["run_cnt"] - p["run_cnt"]
        ns = c["run_time_ns"] - p["run_time_ns"]
        out.append({"name": name, "type": c["type"], "runs": runs, "run_time_ns": ns,
                    "runs_per_s": round(runs / dt, 1), "avg_ns": round(ns / runs, 1) if runs else None,
                    "cpu_pct": round(100 * ns / (dt * 1e9), 4)})
    out.sort(key=lambda r: (-r["run_time_ns"], r["name"]))
    return out


class RunTimeStats:
    """BPF run-time stats on for the life of the context (see libbpf.enable_run_time_stats)."""

    def __init__(self, app):
        self.app = app
        self.fd: int | None = None

    def __enter__(self):
        self.fd = self.app.runner.libbpf.enable_run_time_stats()
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# ---------------------------------------------------------------- maps

def read_maps(app) -> list[dict]:
    from nexusctl.ops.maps import list_maps
    rows = []
    for r in list_maps(app):
        n, mx = r["entries"], r["max_entries"]
        rows.append({"name": r["name"], "type": r["type"], "entries": n, "max_entries": mx,
                     "fill": round(n / mx, 4) if n is not None and mx else None})
    return rows


# ---------------------------------------------------------------- the command

def stats(app, top: int | None = None, *, with_maps: bool = True, with_programs: bool = False) -> dict:
    c = read_counters(app)
    lat = read_latency(app)
    paths = {name: latency_summary(h) for name, h in sorted(lat.items())}
    out = {
        "time": round(time.time(), 3),
        "up": Path(app.config.pin_root).exists(),
        "dns": {f: c.get(f, 0) for f in DNS_FIELDS},
        "policy": {k: c.get(v, 0) for k, v in POLICY_FIELDS.items()},
        "latency_us": {"dns": latency_summary(merge_histograms(list(lat.values()))), **paths},
        "processes": read_processes(app, top),
        "interfaces": read_interfaces(app),
        "host": read_host_counters(app),
        "cpu": read_cpu(app),
        "counters": c,
    }
    out["enforce"] = _enforce_section(app)
    if with_maps:
        out["maps"] = read_maps(app)
    if with_programs:
        out["_programs"] = read_programs(app)          # raw snapshot for program_costs()
    return out


def rates(prev: dict, cur: dict) -> dict:
    """Per-second rates between two stats() results: counters, per-process DNS
    queries (by pid), interfaces (by ifindex and namespace), CPU samples."""
    dt = cur["time"] - prev["time"]
    if dt <= 0:
        return {}

    def per_s(a, b):
        return max(b - a, 0) / dt

    out = {"interval_s": round(dt, 3),
           "counters": {k: per_s(prev["counters"].get(k, 0), v) for k, v in cur["counters"].items()},
           "host": {k: per_s(prev["host"].get(k, 0), v) for k, v in cur["host"].items()}}
    pp = {p["pid"]: p for p in prev["processes"]}
    out["processes"] = {p["pid"]: per_s(pp.get(p["pid"], {}).get("dns_queries", 0), p.get("dns_queries", 0))
                        for p in cur["processes"] if p["pid"] in pp}
    pi = {(i["ifindex"], i["netns_ino"]): i for i in prev["interfaces"]}
    out["interfaces"] = {}
    for i in cur["interfaces"]:
        old = pi.get((i["ifindex"], i["netns_ino"]))
        if old:
            out["interfaces"][(i["ifindex"], i["netns_ino"])] = {
                "rx_packets": per_s(old["rx_packets"], i["rx_packets"]), "rx_bytes": per_s(old["rx_bytes"], i["rx_bytes"])}
    pe = {e["event"]: e for e in prev["cpu"]["events"]}
    out["cpu"] = {e["event"]: per_s(pe.get(e["event"], {}).get("samples", 0), e["samples"]) for e in cur["cpu"]["events"]}
    return out


def _enforce_section(app) -> dict:
    from nexusctl.ops.enforce import stats_section     # the enforcer's own figures (nexusctl.ops.enforce)
    return stats_section(app)
