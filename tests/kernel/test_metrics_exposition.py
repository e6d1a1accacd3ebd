"""stats and the Prometheus exposition read the DNS programs' maps right:
known values are written into nexus_latency and nexus_counters (the DNS
objects loaded with private pins), then read back through nexusctl."""
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nexusctl.app import App
from nexusctl.config import load_config_text
from nexusctl.ops import metrics as ops_metrics
from nexusctl.ops import stats as ops_stats
from nexusctl.tools.libbpf import num_possible_cpus

NBUCKETS = 32


def bucket_of(ns: int) -> int:
    """The header's definition: bucket i counts durations in [2^i, 2^(i+1)) ns."""
    return max(ns.bit_length() - 1, 0)


@pytest.fixture
def app(dns_objs):
    a = App(json=True)
    a.config = load_config_text(f"pin_root: {dns_objs.pin_dir}\n")
    return a


def write_latency(lo, path: int, per_cpu: list[list[int]]):
    """per_cpu: the durations (ns) observed on each CPU, bucketed as the kernel does."""
    layout = lo.btf.struct("nexus_latency")
    with lo.map("nexus_latency") as m:
        vals = []
        for cpu in range(m.ncpus):
            obs = per_cpu[cpu] if cpu < len(per_cpu) else []
            b = [0] * NBUCKETS
            for d in obs:
                b[bucket_of(d)] += 1
            vals.append(layout.pack({"buckets": b, "count": len(obs), "sum_ns": sum(obs)}))
        m.update(path.to_bytes(4, "little"), vals)


def write_counter(lo, name: str, per_cpu: list[int]):
    idx = lo.btf.enum("nexus_counter")[f"NEXUS_CNT_{name.upper()}"]
    with lo.map("nexus_counters") as m:
        vals = [(per_cpu[c] if c < len(per_cpu) else 0).to_bytes(8, "little") for c in range(m.ncpus)]
        m.update(idx.to_bytes(4, "little"), vals)


def families(app) -> dict:
    text = ops_metrics.exposition(app).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def kernel_count(lo, path: int) -> int:
    layout = lo.btf.struct("nexus_latency")
    with lo.map("nexus_latency") as m:
        return sum(layout.unpack(v)["count"] for v in m.lookup(path.to_bytes(4, "little")))


KERNEL, RESOLVER = 0, 1


def test_histogram_buckets_cumulative_and_count_is_the_kernels(dns_objs, app):
    write_latency(dns_objs, KERNEL, [[1500, 1600, 5000], [3000, 900]])
    write_latency(dns_objs, RESOLVER, [[2_000_000] * 4, [40_000_000]])
    fam = families(app)["nexus_dns_latency_seconds"]
    assert fam.type == "histogram"
    for path, pid in (("kernel", KERNEL), ("resolver", RESOLVER)):
        samples = [s for s in fam.samples if s.labels.get("path") == path]
        buckets = [s for s in samples if s.name.endswith("_bucket")]
        counts = [s.value for s in buckets]
        assert counts == sorted(counts), "buckets are cumulative"
        les = [float(s.labels["le"]) for s in buckets]
        assert les == sorted(les) and buckets[-1].labels["le"] == "+Inf"
        count = next(s.value for s in samples if s.name.endswith("_count"))
        assert count == kernel_count(dns_objs, pid) == buckets[-1].value
    ksum = next(s.value for s in fam.samples if s.name.endswith("_sum") and s.labels["path"] == "kernel")
    assert ksum == pytest.approx((1500 + 1600 + 5000 + 3000 + 900) / 1e9)


@pytest.mark.parametrize("edge", [2 ** 10, 2 ** 20])
def test_values_on_bucket_edges(dns_objs, app, edge):
    """Durations just below, on, and just below the next edge: each cumulative
    bucket counts exactly the observations <= its le (Prometheus' meaning)."""
    obs = [edge - 1, edge, 2 * edge - 1, 2 * edge]
    write_latency(dns_objs, KERNEL, [obs])
    fam = families(app)["nexus_dns_latency_seconds"]
    cum = {round(float(s.labels["le"]) * 1e9): s.value for s in fam.samples
           if s.name.endswith("_bucket") and s.labels["path"] == "kernel" and s.labels["le"] != "+Inf"}
    for le_ns, value in cum.items():
        assert value == sum(1 for d in obs if d <= le_ns), f"le={le_ns} ns"
    assert cum[edge - 1] == 1                   # edge-1 only: the value on the edge is above it
    assert cum[2 * edge - 1] == 3               # edge-1, edge, 2*edge-1
    assert cum[4 * edge - 1] == 4


def test_stats_latency_paths_and_overall(dns_objs, app):
    write_latency(dns_objs, KERNEL, [[1500] * 10])                    # bucket [1024, 2048) ns
    write_latency(dns_objs, RESOLVER, [[3_000_000] * 10])             # bucket [2^21, 2^22) ns
    lat = ops_stats.stats(app)["latency_us"]
    assert lat["kernel"]["count"] == 10 and lat["resolver"]["count"] == 10
    assert lat["dns"]["count"] == 20
    assert 1.024 <= lat["kernel"]["p50"] <= 2.048
    assert 1.024 <= lat["kernel"]["p99"] <= 2.048
    assert 2097.152 <= lat["resolver"]["p99"] <= 4194.304
    # overall: half the answers in each bucket; p50 sits at the top of the kernel one
    assert lat["dns"]["p50"] == pytest.approx(2.048)
    assert 2097.152 <= lat["dns"]["p99"] <= 4194.304
    assert lat["dns"]["buckets"] == [{"from_us": 1.024, "to_us": 2.048, "count": 10},
                                     {"from_us": 2097.152, "to_us": 4194.304, "count": 10}]
    assert lat["kernel"]["mean"] == pytest.approx(1.5)


def test_counters_summed_over_cpus_in_stats_and_exposition(dns_objs, app):
    write_counter(dns_objs, "queries", [3, 4])
    write_counter(dns_objs, "policy_blocked", [0, 2])
    d = ops_stats.stats(app)
    ncpu = num_possible_cpus()
    assert d["dns"]["queries"] == (7 if ncpu > 1 else 3)
    assert d["policy"]["blocked"] == (2 if ncpu > 1 else 0)
    assert d["counters"]["queries"] == d["dns"]["queries"]
    fams = families(app)
    assert fams["nexus_dns_queries"].type == "counter"
    assert fams["nexus_dns_queries"].samples[0].name == "nexus_dns_queries_total"
    assert fams["nexus_dns_queries"].samples[0].value == d["dns"]["queries"]
    assert fams["nexus_up"].samples[0].value == 1


def test_exposition_parses_when_nexus_is_down(tmp_path):
    a = App(json=True)
    a.config = load_config_text(f"pin_root: /sys/fs/bpf/nexus-absent-{tmp_path.name[:20]}\n")
    fams = {f.name: f for f in text_string_to_metric_families(ops_metrics.exposition(a).decode())}
    assert fams["nexus_up"].samples[0].value == 0
    assert "nexus_dns_latency_seconds" not in fams


def test_grafana_dashboard_uses_only_exported_metric_names(built, request):
    """Every nexus_* series the dashboard queries is one the exposition has
    (all objects loaded, so every family is there)."""
    import json
    import re

    from helpers.bpf import Loaded, private_pin_dir
    from helpers.cli import ROOT
    lo = Loaded(["nexus_dns_xdp", "nexus_dns_tc", "nexus_metrics"], private_pin_dir(request.node.name))
    try:
        a = App(json=True)
        a.config = load_config_text(f"pin_root: {lo.pin_dir}\n")
        text = ops_metrics.exposition(a).decode()
    finally:
        lo.close()
    exported = set(re.findall(r"^# TYPE (\w+) (\w+)", text, re.M))
    names = set()
    for fam, kind in exported:
        names.add(fam if kind != "counter" or fam.endswith("_total") else fam + "_total")
        if kind == "histogram":
            names |= {fam + "_bucket", fam + "_count", fam + "_sum"}
    dash = json.loads((ROOT / "configs" / "grafana-nexus.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\bnexus_\w+", e)}
    assert used and used <= names, used - names
