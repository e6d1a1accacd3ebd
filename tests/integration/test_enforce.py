"""The DNS egress enforcer end to end: a private cgroup, the lab's resolver,
real dig in the lab's client namespace, nexusctl up/status/stats/events/down
with a config of its own (own pin root and state dir, beside the lab's nexus).

Only 198.18.0.1 is allowed: the same resolver over IPv6 (2001:db8:18::1) is
"another address", so a refusal is the enforcer's and not a missing server."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from helpers.cli import nexusctl
from helpers.enforce import case, cgroup2_root, in_cgroup, probe, remove_cgroup

ROOT = Path(__file__).resolve().parents[2]


class Enf:
    def __init__(self, lab, cg: Path, tmp: Path):
        self.lab, self.cg = lab, cg
        self.pin_root = Path(f"/sys/fs/bpf/nexus-{lab.lab_id}-enf")
        self.state_dir = Path(f"/run/nexus-{lab.lab_id}-enf")
        self.config = tmp / "enforce.yaml"

    def write(self, mode: str = "enforce", lsm: str = "off", allow=None) -> None:
        allow = [self.lab.srv_v4] if allow is None else allow
        self.config.write_text(
            f"pin_root: {self.pin_root}\nstate_dir: {self.state_dir}\nbuild_dir: {ROOT / 'build'}\n"
            f"enforce:\n  enabled: true\n  mode: {mode}\n  lsm: {lsm}\n  cgroups:\n"
            f"    - path: {self.cg.name}\n      allow: {json.dumps(allow)}\n")

    def ctl(self, *args: str):
        return nexusctl("-c", str(self.config), *args)

    def dig(self, server: str, *extra: str, inside: bool = True):
        return in_cgroup(self.cg if inside else None, self.lab.cli_ns,
                         ["dig", f"@{server}", "h7.lab.test", "A", "+short", "+time=2", "+tries=1", *extra])

    def attached(self) -> list:
        r = subprocess.run(["bpftool", "-j", "cgroup", "show", str(self.cg)], capture_output=True, text=True)
        return json.loads(r.stdout.strip() or "[]")


@pytest.fixture(scope="module")
def enf(lab, tmp_path_factory):
    cg = cgroup2_root() / f"nexus-itest-enf-{lab.lab_id}-{os.getpid()}"
    cg.mkdir()
    e = Enf(lab, cg, tmp_path_factory.mktemp("enforce"))
    try:
        e.write()
        r = e.ctl("--json", "up")
        assert r.rc == 0, r.stderr
        yield e
    finally:
        if e.pin_root.exists() or e.state_dir.exists():
            e.ctl("down")
        remove_cgroup(cg)
        subprocess.run(["rm", "-rf", str(e.state_dir)], check=False)
        assert not cg.exists() and not e.pin_root.exists()


def test_status_shows_each_cgroup_attachment(enf):
    r = enf.ctl("--json", "status")
    assert r.rc == 0, r.stderr
    progs = {p["name"]: p for p in r.json["programs"]}
    for hook in ("connect4", "connect6", "sendmsg4", "sendmsg6"):
        p = progs[f"nexus_enforce_{hook}"]
        assert p["type"] == "cgroup_sock_addr"
        assert [(a["kind"], a["target"]) for a in p["attachments"]] == [("cgroup", str(enf.cg))]
    assert sorted(a["attach_type"] for a in enf.attached()) == sorted(
        ["cgroup_inet4_connect", "cgroup_inet6_connect", "cgroup_udp4_sendmsg", "cgroup_udp6_sendmsg"])
    s = enf.ctl("--json", "enforce", "status").json
    cg = s["cgroups"][0]
    assert s["hooks"] == "cgroup" and cg["dir"] == str(enf.cg) and cg["policy_loaded"] is True
    assert cg["cgroup_id"] == os.stat(enf.cg).st_ino
    assert cg["hooks"] == {"connect4": True, "connect6": True, "sendmsg4": True, "sendmsg6": True}


def test_up_again_changes_nothing(enf):
    r = enf.ctl("--json", "up")
    assert r.rc == 0, r.stderr
    assert r.json["changed"] is False


def test_enforce_allowed_resolver_answers_other_address_refused(enf):
    lab = enf.lab
    enf.ctl("enforce", "events")                        # start from an empty event buffer
    ok = enf.dig(lab.srv_v4)
    assert ok.returncode == 0 and ok.stdout.strip() == "198.19.0.7", ok.stdout + ok.stderr
    ok_tcp = enf.dig(lab.srv_v4, "+tcp")
    assert ok_tcp.returncode == 0 and ok_tcp.stdout.strip() == "198.19.0.7"
    for extra in ((), ("+tcp",)):
        bad = enf.dig(lab.srv_v6, *extra)
        assert bad.returncode != 0 and "198.19.0.7" not in bad.stdout
        assert "permission denied" in (bad.stdout + bad.stderr).lower() or \
            "not permitted" in (bad.stdout + bad.stderr).lower(), bad.stdout + bad.stderr
    # connected UDP and DNS over TLS's port, both families
    r = probe(enf.cg, lab.cli_ns, [case("cudp", lab.srv_v4), case("cudp", lab.srv_v6),
                                   case("tcp", lab.srv_v4, 853), case("tcp", lab.srv_v6, 853),
                                   case("udp", lab.srv_v6, 853), case("udp", lab.srv_v6, 5353)])
    assert r["results"] == ["ok", "EPERM", "ok", "EPERM", "EPERM", "ok"]
    # a process outside the cgroup is unaffected
    out = enf.dig(lab.srv_v6, inside=False)
    assert out.returncode == 0 and out.stdout.strip() == "198.19.0.7"

    st = enf.ctl("--json", "stats").json["enforce"]
    assert st["enabled"] is True and st["mode"] == "enforce"
    assert st["counters"]["denied"] >= 5 and st["counters"]["audited"] == 0
    assert st["cgroups"][0]["path"] == enf.cg.name and st["cgroups"][0]["denied"] == st["counters"]["denied"]

    evs = enf.ctl("--json", "enforce", "events").json
    digs = [e for e in evs if e["comm"] == "dig"]
    # per-process counts (nexus_procs, keyed by pid) agree with the events
    procs = {p["pid"]: p["dns_denied"] for p in st["processes"]}
    for pid in {e["pid"] for e in evs}:
        assert procs[pid] == sum(1 for e in evs if e["pid"] == pid)
    assert {(e["destination"], e["port"], e["protocol"], e["verdict"]) for e in digs} == {
        (lab.srv_v6, 53, "udp", "denied"), (lab.srv_v6, 53, "tcp", "denied")}
    assert all(e["cgroup"] == enf.cg.name and e["pid"] > 0 for e in evs)
    assert {(e["destination"], e["port"], e["hook"]) for e in evs if e["pid"] == r["pid"]} == {
        (lab.srv_v6, 53, "connect6"), (lab.srv_v6, 853, "connect6"), (lab.srv_v6, 853, "sendmsg6")}


def test_audit_lets_dns_through_and_counts_it(enf):
    lab = enf.lab
    enf.write(mode="audit")
    r = enf.ctl("--json", "up")
    assert r.rc == 0 and r.json["changed"] is True, r.stderr
    before = enf.ctl("--json", "stats").json["enforce"]["counters"]
    enf.ctl("enforce", "events")
    res = enf.dig(lab.srv_v6)
    assert res.returncode == 0 and res.stdout.strip() == "198.19.0.7"
    after = enf.ctl("--json", "stats").json["enforce"]["counters"]
    assert after["audited"] == before["audited"] + 1 and after["denied"] == before["denied"]
    evs = enf.ctl("--json", "enforce", "events").json
    assert [(e["comm"], e["destination"], e["verdict"]) for e in evs] == [("dig", lab.srv_v6, "audited")]


def test_reload_swaps_programs_and_keeps_the_policy(enf):
    lab = enf.lab
    enf.write(mode="enforce")
    assert enf.ctl("up").rc == 0
    before = {a["id"] for a in enf.attached()}
    r = enf.ctl("--json", "reload")
    assert r.rc == 0, r.stderr
    after = enf.attached()
    assert len(after) == 4 and {a["id"] for a in after}.isdisjoint(before)   # new programs, old ones gone
    bad = enf.dig(lab.srv_v6)
    assert bad.returncode != 0 and "198.19.0.7" not in bad.stdout
    assert enf.dig(lab.srv_v4).stdout.strip() == "198.19.0.7"
    enf.write(mode="audit")
    assert enf.ctl("up").rc == 0


def test_lsm_required_is_not_supported_here(enf):
    from nexusctl.features.enforce import lsm_support
    ok, _ = lsm_support(ROOT / "build")
    if ok:
        pytest.skip("this kernel runs BPF LSM programs")
    enf.write(lsm="required")
    try:
        r = enf.ctl("up")
        assert r.rc == 3
        assert "not supported" in r.stderr
        d = enf.ctl("--json", "doctor").json
        row = next(c for c in d["checks"] if c["name"] == "enforce: BPF LSM")
        assert row["ok"] is False and row["required"] is True
    finally:
        enf.write(mode="audit")
    assert len(enf.attached()) == 4                     # nothing was touched


def test_down_detaches_and_leaves_the_cgroup_as_found(enf):
    lab = enf.lab
    r = enf.ctl("--json", "down")
    assert r.rc == 0 and r.json["changed"] is True, r.stderr
    assert enf.attached() == []
    assert enf.cg.is_dir() and not enf.pin_root.exists()
    res = enf.dig(lab.srv_v6)
    assert res.returncode == 0 and res.stdout.strip() == "198.19.0.7"
    r2 = enf.ctl("--json", "down")
    assert r2.rc == 0 and r2.json["changed"] is False
