"""stats: per-CPU counters summed, latency histograms, per-process figures."""
from __future__ import annotations

from pathlib import Path

from nexusctl.engine.objects import pin_dirs
from nexusctl.tools.btf import BtfError, kernel_btf

COUNTER_PREFIX = "NEXUS_CNT_"
COUNTER_ENUM = "nexus_counter"
DNS_FIELDS = ["queries", "blocked", "rate_limited", "malformed", "suspicious", "cache_hits", "cache_misses",
              "answered_in_kernel"]
POLICY_FIELDS = {"blocked": "policy_blocked", "redirected": "policy_redirected",
                 "synthesized": "policy_synthesized", "allowed": "policy_allowed"}


def read_counters(app, map_name: str = "nexus_counters") -> dict[str, int]:
    """{counter name: sum over CPUs}, names from the map's BTF key enum."""
    pin = pin_dirs(app.config.pin_root)["maps"] / map_name
    if not pin.exists():
        return {}
    L = app.runner.libbpf
    with L.MapHandle.pinned(str(pin)) as m:
        names = {}
        info = m.info
        if info.get("btf_id"):
            try:
                names = {v: n for n, v in kernel_btf(info["btf_id"]).enum(COUNTER_ENUM).items()}
            except BtfError:
                pass
        out = {}
        for k, vals in m.items():
            idx = int.from_bytes(k, "little")
            name = names.get(idx, f"counter_{idx}")
            if name.endswith("__MAX"):
                continue
            name = name.removeprefix(COUNTER_PREFIX).lower()
            out[name] = sum(int.from_bytes(v, "little") for v in vals)
    return out


def histogram_summary(buckets: list[int], unit_scale: float = 1.0) -> dict:
    """p50/p90/p99 from log2 buckets (bucket i holds values in [2^i, 2^(i+1)) ns, 0 in bucket 0).
    A percentile is reported as the upper edge of its bucket, scaled to µs."""
    total = sum(buckets)
    out = {"count": total, "p50": None, "p90": None, "p99": None}
    if not total:
        return out
    for q, key in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99")):
        need = q * total
        acc = 0
        for i, n in enumerate(buckets):
            acc += n
            if acc >= need:
                out[key] = round((2 ** (i + 1)) * unit_scale, 3)
                break
    return out


def stats(app) -> dict:
    c = read_counters(app)
    out = {
        "dns": {f: c.get(f, 0) for f in DNS_FIELDS},
        "policy": {k: c.get(v, 0) for k, v in POLICY_FIELDS.items()},
        "latency_us": {"dns": {"count": 0, "p50": None, "p99": None, "buckets": []}},
        "processes": [],
        "counters": c,
        "up": Path(app.config.pin_root).exists(),
    }
    out["enforce"] = _enforce_section(app)
    return out


def _enforce_section(app) -> dict:
    from nexusctl.ops.enforce import stats_section     # the enforcer's own figures (nexusctl.ops.enforce)
    return stats_section(app)
