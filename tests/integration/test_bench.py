"""The benchmark's machinery on a tiny load (not `make bench`: no timing is
asserted): it brings up a lab of its own, sends one kind of traffic at a time
through the attached program (the counters agree on the kind), swaps the floor
program in and nexus back, and leaves nothing behind — also when killed."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.cli import ROOT, nexusctl

LAB_ID = "s" + os.environ["NEXUS_LAB_ID"][-3:]      # not the tests' lab, not the bench's default
SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")


def lab_gone():
    return not any(Path(f"/run/netns/nexus-{LAB_ID}-{x}").exists() for x in ("srv", "cli")) \
        and not Path(f"/sys/fs/bpf/nexus-{LAB_ID}").exists()


@pytest.fixture
def bench_env():
    before = SYSCTL.read_text()
    yield {"NEXUS_LAB_ID": LAB_ID}
    if not lab_gone():
        nexusctl("lab", "down", env={"NEXUS_LAB_ID": LAB_ID})
    assert SYSCTL.read_text() == before


def test_each_kind_of_traffic_reaches_the_program_and_nothing_is_left(bench_env, tmp_path):
    r = nexusctl("--json", "bench", "--scenarios", "kernel", "--packets", "400", "--rounds", "1",
                 "--out", str(tmp_path), env=bench_env, timeout=600)
    assert r.rc == 0, r.stderr
    doc = r.json
    assert doc == json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert doc["lab_id"] == LAB_ID and doc["errors"] == {}
    kinds = doc["scenarios"]["kernel"]["kinds"]
    assert set(kinds) == {"floor", "non_dns", "cache_miss", "cache_hit", "blocked", "malformed"}
    for name, k in kinds.items():
        assert k["runs"] >= 400, name                 # every packet ran the attached program
        assert k["ns_per_packet"] > 0, name
        if name != "floor":
            assert k["purity"] >= 0.95, name          # and was of the intended kind
    assert doc["bpf_stats"]["method"] == "BPF_ENABLE_STATS"
    assert doc["bpf_stats"]["sysctl_before"] == doc["bpf_stats"]["sysctl_after"]
    assert {t["id"] for t in doc["targets"]} >= {"hit_vs_floor", "non_dns_above_floor", "cpu_ratio"}
    assert lab_gone()


def test_sigterm_mid_run_takes_the_lab_down(bench_env, tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "nexusctl", "--json", "bench", "--scenarios", "kernel",
                          "--packets", "100000", "--rounds", "3", "--out", str(tmp_path)],
                         cwd=ROOT, env={**os.environ, **bench_env}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        # wait until the lab is up and traffic flows (the bench config is written then)
        while not Path(f"/run/nexus-lab-{LAB_ID}/bench-hot.txt").exists():
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(1)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, err                   # interrupted, as with Ctrl-C
    assert lab_gone()
