"""Operations in the lab: apply plans against what is live (--check/--diff, a
second apply changes nothing), reload under a real dnsperf load loses no query
and keeps the maps, one missing interface among several fails alone, and gc
finds planted garbage."""
from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from helpers.cli import nexusctl
from integration.conftest import labcfg

DNSPERF_SECONDS = 6          # bounded load: -l
DNSPERF_QPS = 1500           # -Q, below the lab's per-client rate limit (2000/s)


def stats(lab) -> dict:
    r = nexusctl("--json", *labcfg(lab), "stats")
    assert r.rc == 0, r.stderr
    return r.json


def map_ids(lab) -> dict[str, int]:
    r = nexusctl("--json", *labcfg(lab), "status")
    return {m["name"]: m["id"] for m in r.json["maps"]}


def variant(lab, tmp_path: Path, edit) -> Path:
    """The lab's config with an edit, written next to the test."""
    data = yaml.safe_load(lab.config_path.read_text())
    edit(data)
    p = tmp_path / "nexus.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


@pytest.fixture
def restore_lab(lab):
    yield
    r = nexusctl(*labcfg(lab), "apply")
    assert r.rc == 0, r.stderr


def test_apply_twice_changes_nothing_the_second_time(lab):
    r1 = nexusctl("--json", *labcfg(lab), "apply")
    assert r1.rc == 0, r1.stderr
    r2 = nexusctl("--json", *labcfg(lab), "apply")
    assert r2.rc == 0, r2.stderr
    doc = r2.json
    assert doc["changed"] is False and doc["actions"] == [] and doc["warnings"] == []
    assert doc["interfaces"] == [{"interface": f"{lab.srv_ns}/{lab.srv_if}", "status": "unchanged"}]
    r3 = nexusctl("--json", *labcfg(lab), "apply", "--check")
    assert r3.json["changed"] is False and r3.json["check"] is True


def test_check_and_diff_show_a_config_change_and_make_none(lab, tmp_path, restore_lab):
    cfg = variant(lab, tmp_path, lambda d: d["dns"].update(malformed="pass"))
    r = nexusctl("--json", "-c", str(cfg), "apply", "--check", "--diff")
    assert r.rc == 0, r.stderr
    doc = r.json
    assert doc["changed"] is True and doc["would_change"] is True and doc["dry_run"] is True
    [act] = doc["actions"]
    assert act["kind"] == "config-map" and act["status"] == "planned"
    assert act["diff"] == {"malformed_action": [0, 1]}
    live = nexusctl("--json", *labcfg(lab), "maps", "dump", "nexus_config").json
    assert live["entries"][0]["value"]["malformed_action"] == 0          # --check changed nothing

    r = nexusctl("--json", "-c", str(cfg), "apply", "--diff")
    assert r.rc == 0 and r.json["changed"] is True
    assert r.json["actions"][0]["diff"] == {"malformed_action": [0, 1]}
    live = nexusctl("--json", *labcfg(lab), "maps", "dump", "nexus_config").json
    assert live["entries"][0]["value"]["malformed_action"] == 1
    r = nexusctl("--json", "-c", str(cfg), "apply")
    assert r.json["changed"] is False

    # human --check --diff output names the field
    r = nexusctl(*labcfg(lab), "apply", "--check", "--diff")
    assert "- malformed_action: 1" in r.stdout and "+ malformed_action: 0" in r.stdout
    assert "check: nothing was changed" in r.stdout


def _dnsperf_numbers(text: str) -> dict[str, int]:
    out = {}
    for key in ("Queries sent", "Queries completed", "Queries lost"):
        m = re.search(rf"{key}:\s+(\d+)", text)
        assert m, f"no '{key}' in dnsperf output:\n{text}"
        out[key.split()[1]] = int(m.group(1))
    return out


def test_reload_under_load_loses_no_query_and_keeps_maps(lab, tmp_path):
    qfile = tmp_path / "queries.txt"
    qfile.write_text("".join(f"h{i}.lab.test A\n" for i in range(1, 1001)))
    before_ids = map_ids(lab)
    before = stats(lab)["dns"]["queries"]
    progs_before = {p["name"]: p["id"] for p in nexusctl("--json", *labcfg(lab), "status").json["programs"]}

    perf = subprocess.Popen(["ip", "netns", "exec", lab.cli_ns, "dnsperf", "-s", lab.srv_v4, "-d", str(qfile),
                             "-l", str(DNSPERF_SECONDS), "-Q", str(DNSPERF_QPS), "-t", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # reload only once queries are flowing through XDP (bounded wait)
        for _ in range(50):
            if stats(lab)["dns"]["queries"] > before + 100:
                break
            time.sleep(0.1)
        else:
            pytest.fail("dnsperf traffic did not reach XDP")
        r = nexusctl("--json", *labcfg(lab), "reload")
        still_running = perf.poll() is None
        out, _ = perf.communicate(timeout=DNSPERF_SECONDS + 30)
    finally:
        if perf.poll() is None:
            perf.kill()
            perf.wait()
    assert r.rc == 0, r.stderr
    assert still_running, "dnsperf ended before the reload did: the reload was not under load"
    doc = r.json
    assert doc["changed"] is True
    reloaded = {x["program"]: x for x in doc["reloaded"]}
    assert set(reloaded) >= {"nexus_dns_xdp", "nexus_dns_tc", "nexus_xdp_pass"}
    for name, x in reloaded.items():
        assert x["old_id"] == progs_before[name] and x["new_id"] != x["old_id"]
    assert doc["maps_replaced"] == [] and set(doc["maps_kept"]) >= {"nexus_counters", "nexus_config",
                                                                     "nexus_latency"}

    n = _dnsperf_numbers(out)
    print(f"dnsperf across the reload: {n}; reload: {[(x['program'], x['old_id'], x['new_id']) for x in doc['reloaded']]}")
    assert n["sent"] >= DNSPERF_QPS, out
    assert n["lost"] == 0, out
    assert n["completed"] == n["sent"], out
    # the same maps, and counters that only went forward: every query of the run was counted
    assert map_ids(lab) == before_ids
    after = stats(lab)["dns"]["queries"]
    assert after - before >= n["sent"]
    # the new programs are the ones attached
    st = nexusctl("--json", *labcfg(lab), "status").json
    progs = {p["name"]: p for p in st["programs"]}
    assert progs["nexus_dns_xdp"]["id"] == reloaded["nexus_dns_xdp"]["new_id"]
    assert progs["nexus_dns_xdp"]["attachments"][0]["mode"] == "native"
    assert progs["nexus_dns_tc"]["attachments"][0]["kind"] == "tc-egress"
    # and a second apply has nothing to do
    assert nexusctl("--json", *labcfg(lab), "apply").json["changed"] is False


def test_reload_check_plans_the_swap_and_changes_nothing(lab):
    before = {p["name"]: p["id"] for p in nexusctl("--json", *labcfg(lab), "status").json["programs"]}
    r = nexusctl("--json", *labcfg(lab), "reload", "--check")
    assert r.rc == 0, r.stderr
    kinds = [a["kind"] for a in r.json["actions"]]
    assert kinds.count("load") >= 3 and kinds.count("attach-xdp") == 2 and "attach-tc" in kinds
    assert r.json["changed"] is True and r.json["dry_run"] is True
    after = {p["name"]: p["id"] for p in nexusctl("--json", *labcfg(lab), "status").json["programs"]}
    assert after == before


@pytest.fixture
def second_veth(lab):
    name, peer = f"{lab.srv_if[:-1]}b", f"{lab.srv_if[:-1]}c"
    subprocess.run(["ip", "-n", lab.srv_ns, "link", "add", name, "type", "veth", "peer", "name", peer], check=True)
    for n in (name, peer):
        subprocess.run(["ip", "-n", lab.srv_ns, "link", "set", n, "up"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "-n", lab.srv_ns, "link", "del", name], capture_output=True)


def xdp_prog(ns: str, ifname: str) -> str | None:
    link = json.loads(subprocess.run(["ip", "-n", ns, "-j", "link", "show", "dev", ifname], capture_output=True,
                                     text=True, check=True).stdout)[0]
    xdp = link.get("xdp") or {}
    return (xdp.get("prog") or {}).get("name")


def test_one_missing_interface_fails_alone(lab, tmp_path, second_veth, restore_lab):
    missing = f"{lab.srv_if[:-1]}m"
    cfg = variant(lab, tmp_path, lambda d: d["interfaces"].extend([
        {"name": second_veth, "netns": lab.srv_ns, "xdp_mode": "auto"},
        {"name": missing, "netns": lab.srv_ns}]))
    r = nexusctl("--json", "-c", str(cfg), "apply")
    assert r.rc == 1, r.stderr
    doc = r.json
    rows = {x["interface"]: x for x in doc["interfaces"]}
    assert rows[f"{lab.srv_ns}/{lab.srv_if}"]["status"] == "unchanged"
    assert rows[f"{lab.srv_ns}/{second_veth}"]["status"] == "changed"
    bad = rows[f"{lab.srv_ns}/{missing}"]
    assert bad["status"] == "failed" and "does not exist" in bad["error"]
    assert doc["changed"] is True and "1 of 3 interface(s) failed" in doc["error"]
    assert xdp_prog(lab.srv_ns, second_veth) == "nexus_dns_xdp"
    assert xdp_prog(lab.srv_ns, lab.srv_if) == "nexus_dns_xdp"
    # the human form says the same on stderr, with the fix
    r = nexusctl("-c", str(cfg), "apply")
    assert r.rc == 1 and f"{lab.srv_ns}/{missing}: interface {lab.srv_ns}/{missing} does not exist" in r.stderr
    assert "fix:" in r.stderr
    # back to the lab config: the second interface is detached again
    r = nexusctl("--json", *labcfg(lab), "apply")
    assert r.rc == 0, r.stderr
    assert xdp_prog(lab.srv_ns, second_veth) is None


def test_gc_finds_a_planted_stale_pin_and_attachment(lab, second_veth):
    progs = lab.pin_root / "progs"
    planted = progs / "nexus_planted"
    planted_map = lab.pin_root / "maps" / "nexus_planted_map"
    try:
        subprocess.run(["bpftool", "prog", "load", str(Path("build/nexus_xdp_pass.o").resolve()), str(planted)],
                       check=True, cwd=Path(__file__).resolve().parents[2])
        subprocess.run(["bpftool", "map", "create", str(planted_map), "type", "hash", "key", "4", "value", "4",
                        "entries", "8", "name", "nexus_planted"], check=True)
        subprocess.run(["nsenter", f"--net=/run/netns/{lab.srv_ns}", "bpftool", "net", "attach", "xdpgeneric",
                        "pinned", str(planted), "dev", second_veth], check=True)

        r = nexusctl("--json", *labcfg(lab), "gc")
        assert r.rc == 0, r.stderr
        doc = r.json
        assert doc["changed"] is False and doc["applied"] is False
        found = {f["target"]: f for f in doc["found"]}
        assert f"unpin program {planted}" in found and f"unpin map {planted_map}" in found
        assert any(second_veth in t and "detach xdp" in t for t in found)
        assert planted.exists() and xdp_prog(lab.srv_ns, second_veth) == "nexus_xdp_pass"   # dry run

        r = nexusctl("--json", *labcfg(lab), "gc", "--apply")
        assert r.rc == 0, r.stderr
        assert r.json["changed"] is True and r.json["applied"] is True
        assert not planted.exists() and not planted_map.exists()
        assert xdp_prog(lab.srv_ns, second_veth) is None
        # what the config accounts for is untouched
        assert xdp_prog(lab.srv_ns, lab.srv_if) == "nexus_dns_xdp"
        assert (progs / "nexus_dns_xdp").exists()
        r = nexusctl("--json", *labcfg(lab), "gc")
        assert r.json["found"] == []
    finally:
        for p in (planted, planted_map):
            if p.exists():
                p.unlink()


def test_reload_killed_midway_is_finished_by_the_next_apply(lab):
    # SIGKILL right after the second applied action: two objects reloaded, nothing swapped yet
    r = nexusctl("--json", *labcfg(lab), "reload", env={"NEXUS_FAULT_AFTER_STEP": "2"})
    assert r.rc == -9, (r.rc, r.stderr)
    from helpers.cli import dig
    # the old programs still run: no gap
    assert dig(lab.cli_ns, lab.srv_v4, "h9.lab.test", "A", "+short").stdout.strip() == "198.19.0.9"
    r = nexusctl("--json", *labcfg(lab), "apply")
    assert r.rc == 0, r.stderr
    kinds = {a["kind"] for a in r.json["actions"]}
    assert r.json["changed"] is True and {"attach-xdp", "attach-tc"} <= kinds
    assert nexusctl("--json", *labcfg(lab), "apply").json["changed"] is False
    assert nexusctl("--json", *labcfg(lab), "gc").json["found"] == []
    assert dig(lab.cli_ns, lab.srv_v4, "h9.lab.test", "A", "+short").stdout.strip() == "198.19.0.9"


def test_doctor_reports_xdp_capability_per_interface(lab, tmp_path):
    r = nexusctl("--json", *labcfg(lab), "doctor")
    assert r.rc == 0, r.stderr
    rows = {x["interface"]: x for x in r.json["interfaces"]}
    srv = rows[f"{lab.srv_ns}/{lab.srv_if}"]
    assert srv["exists"] and srv["driver"] == "veth" and srv["native_xdp"] is True
    assert "basic" in srv["xdp_features"] and srv["attached"]["prog"] == "nexus_dns_xdp"
    assert rows[f"{lab.cli_ns}/{lab.cli_if}"]["role"] == "veth-peer"
    missing = f"{lab.srv_if[:-1]}m"
    cfg = variant(lab, tmp_path, lambda d: d["interfaces"].append({"name": missing, "netns": lab.srv_ns}))
    r = nexusctl("--json", "-c", str(cfg), "doctor")
    assert r.rc == 3
    bad = [c for c in r.json["checks"] if not c["ok"]]
    assert all(c["fix"] for c in bad)
    assert f"interface {lab.srv_ns}/{missing}" in r.json["missing"]
