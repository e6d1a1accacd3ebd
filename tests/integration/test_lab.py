"""The foundation end to end: lab up, real dig, status, idempotent up, dry-run,
lock contention, stats, and a down that leaves nothing behind."""
import fcntl
import json
import os
import subprocess
from pathlib import Path

from helpers.cli import dig, nexusctl
from integration.conftest import labcfg


def test_dig_through_the_lab(lab):
    r = dig(lab.cli_ns, lab.srv_v4, "h7.lab.test", "A", "+short")
    assert r.returncode == 0 and r.stdout.strip() == "198.19.0.7"
    r = dig(lab.cli_ns, lab.srv_v6, "h7.lab.test", "AAAA", "+short")
    assert r.stdout.strip() == "2001:db8:19::7"


def test_status_json_shows_xdp_and_tc_on_the_server_end(lab):
    r = nexusctl("--json", *labcfg(lab), "status")
    assert r.rc == 0, r.stderr
    st = r.json
    assert st["pin_root"] == str(lab.pin_root)
    progs = {p["name"]: p for p in st["programs"]}
    target = f"{lab.srv_ns}/{lab.srv_if}"
    xdp = progs["nexus_dns_xdp"]
    assert xdp["type"] == "xdp" and xdp["id"] > 0
    assert {"kind": "xdp", "target": target, "mode": "native"}.items() <= xdp["attachments"][0].items()
    tc = progs["nexus_dns_tc"]
    assert tc["attachments"][0]["kind"] == "tc-egress" and tc["attachments"][0]["target"] == target
    peer = progs["nexus_xdp_pass"]["attachments"][0]
    assert peer["target"] == f"{lab.cli_ns}/{lab.cli_if}"
    maps = {m["name"]: m for m in st["maps"]}
    assert maps["nexus_counters"]["type"] == "percpu_array"
    assert maps["nexus_config"]["entries"] == 1


def test_up_twice_reports_unchanged(lab):
    r1 = nexusctl("--json", *labcfg(lab), "up")
    assert r1.rc == 0, r1.stderr
    r2 = nexusctl("--json", *labcfg(lab), "up")
    assert r2.rc == 0
    assert r2.json["changed"] is False
    assert r2.json["actions"] == []


def _snapshot(lab):
    pins = sorted(str(p.relative_to(lab.pin_root)) for p in lab.pin_root.rglob("*"))
    link = subprocess.run(["ip", "-n", lab.srv_ns, "-j", "link", "show", "dev", lab.srv_if],
                          capture_output=True, text=True).stdout
    tc = subprocess.run(["ip", "netns", "exec", lab.srv_ns, "tc", "-j", "filter", "show", "dev", lab.srv_if,
                         "egress"], capture_output=True, text=True).stdout
    return pins, json.loads(link)[0].get("xdp"), tc


def test_dry_run_changes_nothing(lab):
    before = _snapshot(lab)
    r = nexusctl("--dry-run", *labcfg(lab), "down")
    assert r.rc == 0, r.stderr
    assert "dry run" in r.stdout
    assert "tc filter del" in r.stdout and "bpftool net detach" in r.stdout
    r = nexusctl("--json", "--dry-run", *labcfg(lab), "down")
    plan = r.json
    assert plan["dry_run"] is True and plan["changed"] is False
    assert any(a["status"] == "planned" for a in plan["actions"])
    assert _snapshot(lab) == before


def test_lock_contention_exits_4(lab):
    lock = lab.state_dir / "lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        r = nexusctl(*labcfg(lab), "up")
        assert r.rc == 4
        assert "another nexusctl is running" in r.stderr
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def test_stats_count_real_queries(lab):
    before = nexusctl("--json", *labcfg(lab), "stats").json["dns"]["queries"]
    for i in range(5):
        assert dig(lab.cli_ns, lab.srv_v4, f"h{i + 20}.lab.test", "A", "+short").returncode == 0
    after = nexusctl("--json", *labcfg(lab), "stats").json["dns"]["queries"]
    assert after - before >= 5


def test_maps_commands(lab):
    r = nexusctl("--json", *labcfg(lab), "maps", "list")
    assert {m["name"] for m in r.json} >= {"nexus_counters", "nexus_config"}
    r = nexusctl("--json", *labcfg(lab), "maps", "get", "nexus_counters", "queries")
    assert r.rc == 0 and r.json["key"] == "NEXUS_CNT_QUERIES" and r.json["value"] >= 1
    r = nexusctl("--json", *labcfg(lab), "maps", "dump", "nexus_config")
    assert r.json["entries"][0]["value"]["dns_ports"][0] == 53
    r = nexusctl(*labcfg(lab), "maps", "dump", "no_such_map")
    assert r.rc == 2 and "no pinned map" in r.stderr


def test_lab_down_leaves_nothing_and_is_idempotent(lab):
    r = nexusctl("--json", "lab", "down")
    assert r.rc == 0, r.stderr
    assert r.json["changed"] is True
    assert not Path(f"/run/netns/{lab.srv_ns}").exists()
    assert not Path(f"/run/netns/{lab.cli_ns}").exists()
    assert not lab.pin_root.exists()
    assert not (lab.state_dir / "state.json").exists()
    ps = subprocess.run(["pgrep", "-f", str(lab.run_dir / "unbound.conf")], capture_output=True, text=True)
    assert ps.stdout.strip() == ""
    r = nexusctl("--json", "lab", "down")
    assert r.rc == 0 and r.json["changed"] is False
    r = nexusctl("--json", "lab", "status")
    assert r.rc == 1 and r.json["up"] is False
