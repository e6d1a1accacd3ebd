"""Metrics end to end: the lab (metrics enabled in configs/lab.yaml), real dig,
real datagrams, `stats --json`, `metrics serve` scraped over HTTP and parsed
with prometheus_client, `metrics textfile`, status and doctor; and a metrics-only
config brought up and down to check the links come and go."""
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers.cli import ROOT, nexusctl
from helpers.metrics import pinned_links_of, prog_ids
from integration.conftest import labcfg
from nexusctl.features import metrics as feature
from nexusctl.tools import libbpf as L
from nexusctl.tools import perf
from nexusctl.tools.btf import kernel_btf


def stats(lab) -> dict:
    r = nexusctl("--json", *labcfg(lab), "stats")
    assert r.rc == 0, r.stderr
    return r.json


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_status_shows_metrics_links_and_perf_events(lab):
    r = nexusctl("--json", *labcfg(lab), "status")
    assert r.rc == 0, r.stderr
    st = r.json
    progs = {p["name"]: p for p in st["programs"]}
    targets = {a["target"] for a in progs["nexus_send_ret"]["attachments"]}
    assert targets == {"syscalls:sys_exit_sendto", "syscalls:sys_exit_sendmsg", "syscalls:sys_exit_sendmmsg"}
    assert progs["nexus_netif_rx"]["attachments"][0]["kind"] == "tracepoint"
    clock = progs["nexus_sw_clock"]["attachments"]
    assert {a["kind"] for a in clock} == {"perf_event"} and len(clock) == len(feature.online_cpus())
    rows = {e["event"]: e for e in st["perf_events"]}
    assert rows["cpu_clock"]["available"] and rows["cpu_clock"]["attached_cpus"] == feature.online_cpus()
    for ev in feature.perf_events():
        ok, _ = perf.perf_event_available(ev.type, ev.config)
        assert rows[ev.name]["available"] is ok
        if not ok:      # reported, not attached, not an error
            assert rows[ev.name]["reason"] and rows[ev.name]["attached_cpus"] == []
            assert not progs[ev.prog]["attachments"]
            assert any(ev.name in n for n in st["notes"])


def test_dig_n_times_counted_with_comm_dig(lab):
    n = 5
    pids = []
    for i in range(n):
        p = subprocess.Popen(["ip", "netns", "exec", lab.cli_ns, "dig", f"@{lab.srv_v4}", f"h{i + 1}.lab.test",
                              "+time=2", "+tries=1", "+short"], stdout=subprocess.PIPE, text=True)
        out, _ = p.communicate(timeout=20)
        assert p.returncode == 0 and out.strip()
        pids.append(p.pid)
    procs = {p["pid"]: p for p in stats(lab)["processes"]}
    for pid in pids:
        assert procs[pid]["comm"] == "dig"
        assert procs[pid]["dns_queries"] >= 1
    assert sum(procs[pid]["dns_queries"] for pid in pids) >= n


def test_udp_to_a_non_dns_port_is_not_counted(lab):
    code = ("import os, socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for _ in range(10): s.sendto(b'x', ('{lab.srv_v4}', 9999))\nprint(os.getpid())\n")
    p = subprocess.run(["ip", "netns", "exec", lab.cli_ns, sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    pid = int(p.stdout.strip())
    assert pid not in {q["pid"] for q in stats(lab)["processes"]}


def _srv_if(d, lab):
    rows = [i for i in d["interfaces"] if i["name"] == lab.srv_if and i["netns"] == lab.srv_ns]
    return rows[0] if rows else {"rx_packets": 0, "rx_bytes": 0}


def test_netif_counters_rise_with_traffic(lab):
    before = _srv_if(stats(lab), lab)
    n, size = 30, 200
    code = ("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for _ in range({n}): s.sendto(b'x' * {size}, ('{lab.srv_v4}', 9999))\n")
    subprocess.run(["ip", "netns", "exec", lab.cli_ns, sys.executable, "-c", code], check=True, timeout=30)
    after = _srv_if(stats(lab), lab)
    assert after["rx_packets"] - before["rx_packets"] >= n
    assert after["rx_bytes"] - before["rx_bytes"] >= n * (size + 8 + 20 + 14)


def _kernel_latency_counts(lab) -> dict[str, int]:
    fd = L.obj_get(str(lab.pin_root / "maps" / "nexus_latency"))
    with L.MapHandle(fd) as m:
        btf = kernel_btf(m.info["btf_id"])
        layout = btf.struct("nexus_latency")
        names = {v: k.removeprefix("NEXUS_LAT_").lower() for k, v in btf.enum("nexus_lat_path").items()
                 if not k.endswith("__MAX")}
        return {names[i]: sum(layout.unpack(v)["count"] for v in m.lookup(i.to_bytes(4, "little")))
                for i in names}


def _check_exposition(text: str, lab, before: dict[str, int]) -> dict:
    """before: the kernel's latency counts read just before the scrape."""
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["nexus_up"].samples[0].value == 1
    assert fams["nexus_dns_queries"].samples[0].name == "nexus_dns_queries_total"
    hist = fams["nexus_dns_latency_seconds"]
    assert hist.type == "histogram"
    after = _kernel_latency_counts(lab)
    assert set(after) == {"kernel", "resolver"}
    for path in after:
        s = [x for x in hist.samples if x.labels.get("path") == path]
        buckets = [x.value for x in s if x.name.endswith("_bucket")]
        assert buckets == sorted(buckets)
        count = next(x.value for x in s if x.name.endswith("_count"))
        # _count is the kernel's count at scrape time (the lab is quiet: before == after)
        assert before[path] <= count <= after[path] and buckets[-1] == count
    rx = [x for x in fams["nexus_netif_receive_packets"].samples
          if x.labels == {"interface": lab.srv_if, "netns": lab.srv_ns}]
    assert rx and rx[0].value > 0
    assert {x.labels["event"] for x in fams["nexus_perf_event_available"].samples} == \
        {e.name for e in feature.perf_events()}
    return fams


def test_metrics_serve_scrapes_and_parses(lab):
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "nexusctl", "--json", *labcfg(lab), "metrics", "serve",
                          "--listen", f"127.0.0.1:{port}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=ROOT)
    try:
        ready, _, _ = select.select([p.stdout], [], [], 30)
        assert ready, "metrics serve did not report it was listening"
        url = json.loads(p.stdout.readline())["listening"]
        assert url == f"http://127.0.0.1:{port}/metrics"
        before = _kernel_latency_counts(lab)
        body = urllib.request.urlopen(url, timeout=10).read().decode()
        _check_exposition(body, lab, before)
    finally:
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=10)
    assert rc == 0, p.stderr.read()


def test_metrics_serve_refuses_a_taken_port(lab):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        r = nexusctl(*labcfg(lab), "metrics", "serve", "--listen", f"127.0.0.1:{s.getsockname()[1]}", timeout=30)
    finally:
        s.close()
    assert r.rc == 1 and "cannot listen" in r.stderr and "Traceback" not in r.stderr


def test_metrics_textfile(lab, tmp_path):
    out = tmp_path / "nexus.prom"
    before = _kernel_latency_counts(lab)
    r = nexusctl("--json", *labcfg(lab), "metrics", "textfile", str(out))
    assert r.rc == 0, r.stderr
    assert r.json["changed"] is True and r.json["path"] == str(out)
    _check_exposition(out.read_text(), lab, before)
    assert not [p for p in tmp_path.iterdir() if p != out]          # no temporary file left


def test_doctor_lists_perf_events_without_failing_on_them(lab):
    r = nexusctl("--json", *labcfg(lab), "doctor")
    d = r.json
    rows = {c["name"]: c for c in d["checks"]}
    for ev in feature.perf_events():
        c = rows[f"perf event {ev.name}"]
        assert c["required"] is False
        assert c["name"] not in d["missing"]
        if not c["ok"]:
            assert "unavailable" in c["detail"]
    assert rows["tracepoint syscalls:sys_enter_sendto"]["ok"]


# ---------------------------------------------------------------- links come and go

@pytest.fixture
def metrics_only(tmp_path):
    tag = os.environ.get("NEXUS_LAB_ID", "t") + "m"
    pin_root = Path(f"/sys/fs/bpf/nexus-{tag}")
    cfg = tmp_path / "metrics.yaml"
    cfg.write_text(f"pin_root: {pin_root}\nstate_dir: /run/nexus-{tag}\nbuild_dir: {ROOT / 'build'}\n"
                   "metrics: {enabled: true}\n")
    try:
        yield cfg, pin_root
    finally:
        nexusctl("-c", str(cfg), "down")
        shutil.rmtree(f"/run/nexus-{tag}", ignore_errors=True)       # the lock file stays after down


def test_links_persist_after_up_and_go_at_down(built, metrics_only):
    cfg, pin_root = metrics_only
    r = nexusctl("--json", "-c", str(cfg), "up")
    assert r.rc == 0, r.stderr
    ids = prog_ids(pin_root)
    want = len(feature.TRACEPOINTS) + len(feature.online_cpus())
    assert len(pinned_links_of(ids)) == want          # nexusctl has exited; the links stay
    r = nexusctl("--json", "-c", str(cfg), "up")
    assert r.rc == 0 and r.json["changed"] is False
    r = nexusctl("--json", "-c", str(cfg), "down")
    assert r.rc == 0, r.stderr
    assert not pin_root.exists()
    deadline = time.monotonic() + 10                  # the kernel releases unpinned links deferred
    while pinned_links_of(ids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pinned_links_of(ids) == []
