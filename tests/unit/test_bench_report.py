"""The benchmark's report: targets from one run's figures, the table rows, the
docs block, the chart, dnsperf parsing, the bench config and the stats guard.
No kernel: the measurements themselves run in `make bench`."""
import copy
import errno
import os

import pytest

from nexusctl import dga
from nexusctl.config import load_config_text
from nexusctl.ops import bench
from nexusctl.ops import bench_report as report


def kind(ns, floor=25.0, purity=1.0):
    return {"ns_per_packet": ns, "samples_ns": [ns], "runs": 1000, "purity": purity,
            "vs_floor": round(ns / floor, 2), "above_floor_ns": round(ns - floor, 1)}


DOC = {
    "date": "2026-11-25 12:00:00 +0000", "quick": False, "duration_s": 300.0,
    "machine": {"cpus": 2, "cpu_model": "Test CPU", "kernel": "6.18", "memory_gib": 8.0, "load_avg": [1.0, 1, 1]},
    "errors": {},
    "scenarios": {
        "kernel": {"rate_pps": 20000, "kinds": {
            "floor": kind(25.0), "non_dns": kind(80.0), "cache_miss": {**kind(900.0), "tc_ns_per_answer": 1300.0},
            "cache_hit": kind(200.0), "blocked": kind(600.0, purity=0.5), "malformed": kind(120.0)}},
        "cpu": {"rate_qps": 20000, "ratio": 40.0, "host_ratio": 1.1,
                "unbound_alone": {"server_cpu_ns_per_query": 10000.0},
                "kernel": {"server_cpu_ns_per_query": 250.0, "hit_share": 1.0}},
        "e2e": {"qps_ratio": 1.5,
                "unbound_alone": {"qps": 100000.0, "latency_avg_us": 400.0, "lost": 0, "bottleneck": "unbound"},
                "kernel": {"qps": 150000.0, "latency_avg_us": 80.0, "lost": 0, "bottleneck": "dnsperf",
                           "xdp_ns_per_query": 450.0}},
        "policy": {"lookup": [{"rules": 1000, "ns_per_packet": 500.0, "no_match_ns_per_packet": 800.0,
                               "purity": 1.0, "no_match_purity": 1.0},
                              {"rules": 1000000, "ns_per_packet": 700.0, "no_match_ns_per_packet": 820.0,
                               "purity": 0.5, "no_match_purity": 1.0}],
                   "lookup_ratio_max_vs_min": 1.4, "no_match_ratio_max_vs_min": 1.03,
                   "import": {"domains": 1000000, "libbpf_s": 3.0, "bpftool_s": 12.0, "speedup_vs_bpftool": 4.0,
                              "bpftool_basis": "100,000 updates timed, ×10", "parse_s": 0.5, "hash_s": 1.0,
                              "fill_s": 1.2, "raw_libbpf_batch_s": 0.6, "raw_speedup_vs_bpftool": 20.0},
                   "bytes_per_rule": 96.0},
        "cli": {"status_ms": {"median": 450.0}, "startup_ms": {"median": 400.0}, "up_noop_ms": {"median": 470.0},
                "up_ms": {"median": 900.0}, "down_ms": {"median": 500.0}},
    },
}


def by_id(doc):
    return {t.id: t for t in report.targets(doc)}


def test_targets_are_judged_from_the_figures_of_the_run():
    t = by_id(DOC)
    assert t["cpu_ratio"].met is True                       # 40× ≥ 30×
    assert t["hit_vs_floor"].met is True and t["hit_vs_floor"].value == 8.0
    assert t["non_dns_above_floor"].met is False            # +55 ns > +40 ns
    assert t["policy_flat"].met is False                    # 1.4× > 1.2×
    assert t["import_time"].met is True
    assert t["import_speedup"].met is False                 # 4× < 5×
    assert t["status_ms"].met is False and t["status_ms"].verdict() == "MISSED"


def test_a_missing_scenario_is_pending_not_met():
    doc = copy.deepcopy(DOC)
    doc["scenarios"]["policy"] = {"status": "pending", "reason": "not landed"}
    del doc["scenarios"]["cpu"]
    t = by_id(doc)
    assert t["policy_flat"].met is None and t["policy_flat"].verdict() == "pending"
    assert t["cpu_ratio"].met is None
    rows = report.rows(doc)
    assert any(r["scenario"] == "4 policy" and r["figure"] == "pending" and r["value"] == "not landed" for r in rows)
    assert not any(r["scenario"].startswith("2 ") for r in rows)


def test_rows_say_missed_next_to_the_number_and_flag_impure_traffic():
    rows = report.rows(DOC)
    nondns = next(r for r in rows if r["figure"].startswith("non-DNS"))
    assert nondns["value"].startswith("80 ns") and "+55 ns" in nondns["value"]
    assert nondns["target"] == "≤ +40 ns" and nondns["verdict"] == "MISSED"
    blocked = next(r for r in rows if r["figure"].startswith("DGA-like"))
    assert "only 50% of runs were this kind" in blocked["value"]
    hit = next(r for r in rows if "cache hit answered" in r["figure"])
    assert hit["verdict"] == "met" and "8.0× floor" in hit["value"]
    status = next(r for r in rows if r["figure"] == "nexusctl status")
    assert status["value"] == "450 ms" and status["verdict"] == "MISSED"


def test_policy_rows_name_the_rule_counts_and_the_breakdown():
    rows = [r for r in report.rows(DOC) if r["scenario"] == "4 policy"]
    by_fig = {r["figure"]: r for r in rows}
    assert "XDP ns/packet with 1,000,000 rules loaded" in by_fig
    assert "only 50% of runs were this kind" in by_fig["XDP ns/packet with 1,000,000 rules loaded"]["value"]
    flat = by_fig["1,000,000 ÷ 1,000 rules, queries blocked by a rule"]
    assert flat["value"] == "1.40×" and flat["verdict"] == "MISSED"
    imp = next(r for r in rows if r["figure"].startswith("import 1,000,000 domains"))
    assert imp["value"] == "3.00 s (parse 0.50 s, hash 1.00 s, fill 1.20 s)" and imp["verdict"] == "met"
    assert any("×10" in r["figure"] for r in rows)


def test_a_failed_scenario_shows_its_error():
    doc = copy.deepcopy(DOC)
    doc["scenarios"]["e2e"] = {"status": "failed", "reason": "dnsperf printed no statistics"}
    doc["errors"]["e2e"] = "dnsperf printed no statistics"
    rows = [r for r in report.rows(doc) if r["scenario"].startswith("3 ")]
    assert rows == [{"scenario": "3 dnsperf max QPS", "figure": "failed", "value": "dnsperf printed no statistics",
                     "target": "", "verdict": ""}]


def test_docs_block_is_replaced_in_place_and_idempotent(tmp_path):
    p = tmp_path / "benchmarks.md"
    p.write_text(f"# Benchmarks\n\nintro\n\n{report.DOCS_BEGIN}\nold table\n{report.DOCS_END}\n\n## After\ntail\n")
    report.write_docs(p, DOC)
    text = p.read_text()
    assert "old table" not in text
    assert text.startswith("# Benchmarks\n\nintro\n") and text.endswith("## After\ntail\n")
    assert "Measured 2026-11-25 12:00:00 +0000 (full run, 300.0 s) on 2 × Test CPU" in text
    assert "| 5 CLI wall time | nexusctl status | 450 ms | < 300 ms | **MISSED** |" in text
    assert "Missed here:" in text and "`nexusctl status` wall time (median) (450.00 ms, target < 300 ms)" in text
    report.write_docs(p, DOC)
    assert p.read_text() == text
    assert text.count(report.DOCS_BEGIN) == 1


def test_docs_block_is_appended_when_the_file_has_none(tmp_path):
    p = tmp_path / "b.md"
    p.write_text("# Benchmarks\nhand-written\n")
    report.write_docs(p, DOC)
    text = p.read_text()
    assert text.startswith("# Benchmarks\nhand-written\n\n" + report.DOCS_BEGIN)
    assert text.rstrip().endswith(report.DOCS_END)


def test_markdown_cells_escape_pipes():
    doc = copy.deepcopy(DOC)
    doc["scenarios"]["policy"] = {"status": "failed", "reason": "a | b"}
    assert "a \\| b" in report.markdown_table(doc)


def test_chart_is_a_png_even_with_pending_panels(tmp_path):
    pytest.importorskip("matplotlib")
    doc = copy.deepcopy(DOC)
    doc["scenarios"]["policy"] = {"status": "pending", "reason": "the policy engine is not on this branch yet"}
    out = tmp_path / "results.png"
    report.chart(doc, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


DNSPERF_OUT = """DNS Performance Testing Tool
Version 2.10.0

[Status] Testing complete (time limit)

Statistics:

  Queries sent:         59999
  Queries completed:    59990 (99.98%)
  Queries lost:         9 (0.02%)

  Response codes:       NOERROR 59000 (98.35%), NXDOMAIN 990 (1.65%)
  Average packet size:  request 30, response 52
  Run time (s):         3.000125
  Queries per second:   19998.553414

  Average Latency (s):  0.000208 (min 0.000003, max 0.005644)
  Latency StdDev (s):   0.000708
"""


def test_dnsperf_statistics_are_parsed():
    d = bench.parse_dnsperf(DNSPERF_OUT)
    assert (d["sent"], d["completed"], d["lost"]) == (59999, 59990, 9)
    assert d["qps"] == pytest.approx(19998.553414)
    assert d["run_time_s"] == pytest.approx(3.000125)
    assert (d["latency_avg_s"], d["latency_min_s"], d["latency_max_s"]) == (0.000208, 0.000003, 0.005644)
    assert d["rcodes"] == {"NOERROR": 59000, "NXDOMAIN": 990}


def test_dnsperf_without_statistics_is_an_error():
    from nexusctl.errors import OperationFailed
    with pytest.raises(OperationFailed):
        bench.parse_dnsperf("dnsperf: invalid argument\n")


def test_bottleneck_names_the_saturated_side():
    assert bench.bottleneck({"unbound_cores": 0.97, "dnsperf_cores": 0.5}, 2).startswith("unbound")
    assert bench.bottleneck({"unbound_cores": 0.0, "dnsperf_cores": 0.95}, 2).startswith("dnsperf")
    assert bench.bottleneck({"unbound_cores": 0.4, "dnsperf_cores": 0.4, "host_busy_cores": 1.9}, 2).startswith("the host")
    assert bench.bottleneck({"unbound_cores": 0.4, "dnsperf_cores": 0.4, "host_busy_cores": 0.9}, 2).startswith("none")


def test_blocked_names_score_over_the_threshold_with_margin():
    names = bench.dga_names(50, threshold=600, min_length=8)
    assert len(set(names)) == 50
    for n in names:
        label = n.split(".")[0]
        assert dga.score(label, 8) >= 600 + bench.DGA_MARGIN


def test_lab_id_never_the_contract_names(monkeypatch):
    monkeypatch.delenv("NEXUS_LAB_ID", raising=False)
    a, b = bench.lab_id_for(bench.PROJECT_ROOT), bench.lab_id_for(bench.PROJECT_ROOT.parent)
    assert a and a.startswith("b") and len(a) == 4 and a != b
    monkeypatch.setenv("NEXUS_LAB_ID", "zz")
    assert bench.lab_id_for() == "zz"


def test_bench_config_never_limits_blocks_dga_and_keeps_only_the_dns_programs(tmp_path):
    lab_cfg = tmp_path / "nexus.yaml"
    lab_cfg.write_text("pin_root: /sys/fs/bpf/nexus-zz\ndns:\n  rate_limit:\n    rate: 2000\n    burst: 4000\n"
                       "  dga:\n    mode: count\nmetrics:\n  enabled: true\ncert:\n  enabled: true\n")
    lab = bench.BenchLab.__new__(bench.BenchLab)
    lab.lab_config = lab_cfg
    cfg = load_config_text(lab.bench_config_text())
    assert cfg.dns.rate_limit.enabled and cfg.dns.rate_limit.rate == bench.NEVER_LIMITED
    assert cfg.dns.rate_limit.burst == bench.NEVER_LIMITED
    assert cfg.dns.dga.mode == "block" and not cfg.metrics.enabled and not cfg.cert.enabled
    assert str(cfg.pin_root) == "/sys/fs/bpf/nexus-zz"


class FakeLibbpf:
    def __init__(self, err=None):
        self.err = err
        self.fd = None

    def enable_run_time_stats(self):
        if self.err:
            raise OSError(self.err, os.strerror(self.err))
        self.fd = os.open(os.devnull, os.O_RDONLY)
        return self.fd


def test_stats_through_the_fd_leave_the_sysctl_alone(tmp_path):
    sysctl = tmp_path / "bpf_stats_enabled"
    sysctl.write_text("0\n")
    L = FakeLibbpf()
    with bench.BpfStatsOn(L, sysctl) as s:
        assert s.method == "BPF_ENABLE_STATS" and sysctl.read_text() == "0\n"
    with pytest.raises(OSError):
        os.fstat(L.fd)                                   # closed: the kernel turns stats off
    assert s.to_json() == {"method": "BPF_ENABLE_STATS", "sysctl_before": "0", "sysctl_after": "0"}


def test_sysctl_fallback_is_restored_on_failure(tmp_path):
    sysctl = tmp_path / "bpf_stats_enabled"
    sysctl.write_text("0\n")
    with pytest.raises(KeyboardInterrupt):
        with bench.BpfStatsOn(FakeLibbpf(errno.EINVAL), sysctl) as s:
            assert sysctl.read_text() == "1\n"
            raise KeyboardInterrupt
    assert sysctl.read_text() == "0\n"
    assert s.to_json() == {"method": "sysctl kernel.bpf_stats_enabled", "sysctl_before": "0", "sysctl_after": "0"}


def test_other_stats_errors_are_not_papered_over(tmp_path):
    sysctl = tmp_path / "bpf_stats_enabled"
    sysctl.write_text("0\n")
    with pytest.raises(OSError):
        with bench.BpfStatsOn(FakeLibbpf(errno.EPERM), sysctl):
            pass
    assert sysctl.read_text() == "0\n"


def test_sigterm_interrupts_like_ctrl_c_and_the_handler_is_restored():
    import signal
    import time
    old = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with bench.signals_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) is old


def test_bench_refuses_dry_run():
    from helpers.cli import nexusctl
    r = nexusctl("--dry-run", "bench")
    assert r.rc == 2 and "no dry run" in r.stderr
