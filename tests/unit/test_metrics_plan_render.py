"""Metrics without the kernel: config, planning of links, histogram maths,
exposition buckets, the stats screen."""
import io

import pytest
from rich.console import Console

from helpers.cli import nexusctl
from nexusctl.config import load_config_text
from nexusctl.config.model import parse_listen
from nexusctl.engine.links import AttachLink
from nexusctl.engine.planner import plan_up
from nexusctl.engine.state import State
from nexusctl.errors import ConfigError
from nexusctl.features import metrics as feature
from nexusctl.ops import metrics as ops_metrics
from nexusctl.ops import stats as ops_stats


# ---------------------------------------------------------------- config

def test_metrics_defaults_listen_on_loopback():
    m = load_config_text("").metrics
    assert m.enabled is False
    assert parse_listen(m.listen) == ("127.0.0.1", 9435)
    assert m.tls_ports == [443] and m.sample_frequency > 0


@pytest.mark.parametrize("listen,want", [("0.0.0.0:9100", ("0.0.0.0", 9100)), ("[::1]:9435", ("::1", 9435)),
                                         ("localhost:80", ("localhost", 80))])
def test_listen_forms(listen, want):
    assert parse_listen(listen) == want


@pytest.mark.parametrize("bad", ["9435", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:99999", "::1:9435", ":9435"])
def test_bad_listen_is_a_config_error_naming_the_line(bad):
    with pytest.raises(ConfigError) as e:
        load_config_text(f"metrics:\n  enabled: true\n  listen: '{bad}'\n")
    assert ":3" in e.value.message and "listen" in e.value.message


@pytest.mark.parametrize("text", ["metrics: {hardware_events: [branch_misses]}", "metrics: {tls_ports: [443, 443]}",
                                  "metrics: {max_processes: 10}", "metrics: {interfaces: ['bad name']}",
                                  "metrics: {sample_rate: 99}"])
def test_bad_metrics_keys_rejected(text):
    with pytest.raises(ConfigError):
        load_config_text(text + "\n")


def test_config_values_follow_dns_ports_and_filter():
    cfg = load_config_text("dns: {ports: [53, 5353]}\nmetrics: {enabled: true, interfaces: [eth0], tls_ports: [443, 8443]}\n")
    v = feature.config_values(cfg)
    assert v == {"dns_ports": [53, 5353], "tls_ports": [443, 8443], "iface_filter": 1, "ifaces": [b"eth0"]}
    assert feature.map_sizes(cfg)["nexus_procs"] == cfg.metrics.max_processes


# ---------------------------------------------------------------- planning

@pytest.fixture
def fake_perf(monkeypatch):
    """cpu_clock opens, hardware events do not (a VM without a PMU); two CPUs."""
    from nexusctl.tools import perf
    monkeypatch.setattr(perf, "perf_event_available",
                        lambda t, c: (t == perf.PERF_TYPE_SOFTWARE, "" if t == perf.PERF_TYPE_SOFTWARE
                                      else "No such file or directory"))
    monkeypatch.setattr(feature, "online_cpus", lambda: [0, 1])


def test_links_disabled_means_none(fake_perf):
    assert feature.links(load_config_text("")) == []


def test_links_tracepoints_then_available_perf_events_per_cpu(fake_perf):
    cfg = load_config_text("metrics: {enabled: true, sample_frequency: 49}\n")
    specs = feature.links(cfg)
    tps = [s for s in specs if s.kind == "tracepoint"]
    assert [s.tp for s in tps][:3] == [("syscalls", "sys_exit_sendto"), ("syscalls", "sys_exit_sendmsg"),
                                       ("syscalls", "sys_exit_sendmmsg")]
    assert ("sock", "inet_sock_set_state") in [s.tp for s in tps]
    perf_specs = [s for s in specs if s.kind == "perf_event"]
    assert [(s.name, s.prog, s.perf[2], s.perf[3]) for s in perf_specs] == [
        ("metrics_cpu_clock_49hz_cpu0", "nexus_sw_clock", 0, 49),
        ("metrics_cpu_clock_49hz_cpu1", "nexus_sw_clock", 1, 49)]
    assert all("." not in s.name for s in specs)         # bpffs refuses dots


def test_sampling_off_means_no_perf_links_and_no_ranges(fake_perf):
    cfg = load_config_text("metrics: {enabled: true, sample_frequency: 0}\n")
    assert [s for s in feature.links(cfg) if s.kind == "perf_event"] == []
    assert feature.extra_actions(cfg, None) == []


def test_up_plan_loads_metrics_then_attaches_links(fake_perf, tmp_path):
    cfg = load_config_text(f"state_dir: {tmp_path}\nmetrics: {{enabled: true}}\n")
    actions = plan_up(cfg, State.load(cfg.state_dir), build=False)
    kinds = [a.kind for a in actions]
    assert kinds.index("load") < kinds.index("config-map") < kinds.index("prog-ranges") < kinds.index("attach-link")
    assert [a.spec.name for a in actions if a.kind == "load"] == ["nexus_metrics"]
    links = [a for a in actions if isinstance(a, AttachLink)]
    assert len(links) == len(feature.TRACEPOINTS) + 2


def test_status_fields_report_unavailable_events(fake_perf, tmp_path):
    class A:
        config = load_config_text("metrics: {enabled: true}\n")
    st = State.load(tmp_path)
    st.data["links"] = {"metrics_cpu_clock_99hz_cpu0": {}, "metrics_cpu_clock_99hz_cpu1": {}, "metrics_sendto": {}}
    out = feature.status_fields(A(), st)
    rows = {r["event"]: r for r in out["perf_events"]}
    assert rows["cpu_clock"]["available"] and rows["cpu_clock"]["attached_cpus"] == [0, 1]
    assert not rows["cycles"]["available"] and "no hardware PMU" in rows["cycles"]["reason"]
    assert rows["cycles"]["configured"] is True and rows["cycles"]["attached_cpus"] == []
    assert len(out["notes"]) == 1 and "cycles, instructions, cache_misses" in out["notes"][0]


# ---------------------------------------------------------------- histogram maths

def test_quantiles_interpolate_inside_log2_buckets():
    b = [0] * 32
    b[10] = 100                                     # all in [1024, 2048) ns
    assert ops_stats.quantile_ns(b, 0.5) == pytest.approx(1536)
    assert ops_stats.quantile_ns(b, 1.0) == pytest.approx(2048)
    b[20] = 100
    assert ops_stats.quantile_ns(b, 0.5) == pytest.approx(2048)
    assert 2 ** 20 <= ops_stats.quantile_ns(b, 0.99) <= 2 ** 21
    assert ops_stats.quantile_ns([0] * 32, 0.5) is None


def test_bucket_zero_holds_zero_and_one_ns():
    assert ops_stats.bucket_bounds(0) == (0, 2)
    assert ops_stats.bucket_bounds(5) == (32, 64)


def test_latency_summary_shape():
    s = ops_stats.latency_summary({"buckets": [0] * 10 + [4] + [0] * 21, "count": 4, "sum_ns": 6000})
    assert set(s) >= {"count", "p50", "p99", "buckets"}
    assert s["count"] == 4 and s["mean"] == 1.5
    assert s["buckets"] == [{"from_us": 1.024, "to_us": 2.048, "count": 4}]


def test_cumulative_buckets_le_and_inf():
    b = [0] * 32
    b[0], b[3], b[31] = 1, 2, 5                    # bucket 31 also holds anything longer
    out = ops_metrics.cumulative_buckets(b, 8)
    assert len(out) == 32 and out[-1] == ("+Inf", 8)
    assert out[0] == ("1e-09", 1)                  # bucket 0: 0 and 1 ns
    assert float(out[3][0]) == pytest.approx(15e-9) and out[3][1] == 3
    assert out[30][1] == 3                         # bucket 31 only in +Inf
    assert [v for _, v in out] == sorted(v for _, v in out)


def test_cumulative_buckets_never_exceed_count():
    # a scrape can read buckets a moment ahead of count (per-CPU, not atomic)
    out = ops_metrics.cumulative_buckets([3] + [0] * 31, 2)
    assert all(v <= 2 for _, v in out)


# ---------------------------------------------------------------- rendering

SAMPLE = {
    "time": 1000.0, "up": True,
    "dns": {f: 10 for f in ops_stats.DNS_FIELDS}, "policy": {k: 1 for k in ops_stats.POLICY_FIELDS},
    "latency_us": {"dns": ops_stats.latency_summary({"buckets": [0] * 10 + [8, 2] + [0] * 20, "count": 10,
                                                       "sum_ns": 15000}),
                   "kernel": ops_stats.latency_summary({"buckets": [0] * 10 + [8, 2] + [0] * 20, "count": 10,
                                                          "sum_ns": 15000}),
                   "resolver": ops_stats.latency_summary({"buckets": [], "count": 0, "sum_ns": 0})},
    "processes": [{"pid": 42, "comm": "dig", "dns_queries": 7, "cert_validations": 0, "tls_connections": 1,
                   "dns_denied": 0, "idle_s": 1.0}],
    "interfaces": [{"name": "nx-srv0", "ifindex": 3, "netns": "nexus-srv", "netns_ino": 99, "rx_packets": 50,
                    "rx_bytes": 5000}],
    "host": {"dns_queries": 7}, "counters": {"queries": 10, "policy_blocked": 1},
    "cpu": {"sample_frequency": 99, "events": [
        {"event": "cpu_clock", "available": True, "reason": "", "samples": 200, "in_nexus": 3,
         "programs": {"nexus_dns_xdp": 3}},
        {"event": "cycles", "available": False, "reason": "no hardware PMU (ENOENT; usual in a VM)", "samples": 0,
         "in_nexus": 0, "programs": {}}]},
    "maps": [{"name": "nexus_procs", "type": "lru_hash", "entries": 8, "max_entries": 16, "fill": 0.5}],
}


def test_screen_shows_rates_bars_percentiles_and_unavailable_events():
    from nexusctl.cli.stats import screen
    later = {**SAMPLE, "time": 1002.0, "counters": {"queries": 30, "policy_blocked": 1},
             "processes": [{**SAMPLE["processes"][0], "dns_queries": 11}]}
    rates = ops_stats.rates(SAMPLE, later)
    assert rates["counters"]["queries"] == 10 and rates["processes"][42] == 2
    buf = io.StringIO()
    Console(file=buf, width=160, color_system=None).print(screen({**later, "dns": {"queries": 30}}, rates, 10))
    text = buf.getvalue()
    assert "10/s" in text                       # queries rate
    assert "p50" in text and "p99" in text and "█" in text
    assert "dig" in text and "2/s" in text      # the process and its rate
    assert "nx-srv0" in text and "nexus-srv" in text
    assert "unavailable" in text and "no hardware PMU" in text
    assert "nexus_dns_xdp 3" in text
    assert "50.0%" in text                      # map fill


def test_stats_json_when_nothing_is_up(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"pin_root: /sys/fs/bpf/nexus-none-{tmp_path.name[:12]}\nstate_dir: {tmp_path}\n")
    r = nexusctl("--json", "-c", str(cfg), "stats")
    assert r.rc == 0, r.stderr
    d = r.json
    assert d["up"] is False
    assert set(d["dns"]) >= {"queries", "blocked", "rate_limited", "malformed", "suspicious", "cache_hits",
                             "cache_misses", "answered_in_kernel"}
    assert set(d["policy"]) == {"blocked", "redirected", "synthesized", "allowed"}
    assert set(d["latency_us"]["dns"]) >= {"count", "p50", "p99", "buckets"}
    assert d["processes"] == [] and isinstance(d["counters"], dict)


def test_metrics_help_has_examples():
    for cmd in (["metrics", "serve"], ["metrics", "textfile"]):
        r = nexusctl(*cmd, "--help")
        assert r.rc == 0 and "xample" in r.stdout


def test_program_costs_over_an_interval():
    prev = {"a": {"id": 1, "type": "xdp", "run_cnt": 100, "run_time_ns": 10_000},
            "b": {"id": 2, "type": "tracepoint", "run_cnt": 0, "run_time_ns": 0},
            "c": {"id": 3, "type": "tracepoint", "run_cnt": 5, "run_time_ns": 500}}
    cur = {"a": {"id": 1, "type": "xdp", "run_cnt": 1100, "run_time_ns": 110_000},
           "b": {"id": 2, "type": "tracepoint", "run_cnt": 0, "run_time_ns": 0},
           "c": {"id": 9, "type": "tracepoint", "run_cnt": 1, "run_time_ns": 100}}   # reloaded: skipped
    out = ops_stats.program_costs(prev, cur, 2.0)
    assert [r["name"] for r in out] == ["a", "b"]
    a = out[0]
    assert a["runs"] == 1000 and a["avg_ns"] == 100 and a["runs_per_s"] == 500
    assert a["cpu_pct"] == pytest.approx(100 * 100_000 / 2e9)
    assert out[1]["avg_ns"] is None


def test_cost_needs_an_interval():
    r = nexusctl("stats", "--cost", "--interval", "0")
    assert r.rc == 2 and "interval" in r.stderr


def test_new_sample_frequency_replaces_the_perf_links(fake_perf, tmp_path):
    from nexusctl.engine.links import DetachLink
    cfg = load_config_text(f"state_dir: {tmp_path}\nmetrics: {{enabled: true, sample_frequency: 199}}\n")
    st = State.load(cfg.state_dir)
    st.data["links"] = {"metrics_cpu_clock_99hz_cpu0": {"kind": "perf_event", "target": "cpu_clock cpu0 @99Hz"}}
    actions = plan_up(cfg, st, build=False)
    attach = [a.spec.name for a in actions if isinstance(a, AttachLink) and a.spec.kind == "perf_event"]
    assert attach == ["metrics_cpu_clock_199hz_cpu0", "metrics_cpu_clock_199hz_cpu1"]
    assert [a.name for a in actions if isinstance(a, DetachLink)] == ["metrics_cpu_clock_99hz_cpu0"]
