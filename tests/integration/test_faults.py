"""Fault injection in the CLI, in the lab: nexusctl killed (SIGKILL) after each
step of `up` and of `reload`, then `up` converges and `down` leaves nothing;
the BPF filesystem unmounted under a running nexus; an interface deleted while
attached; clang or bpftool missing; a read-only pin directory; an unreadable
config; two nexusctl at once.

The kill uses the executor's hook NEXUS_FAULT_AFTER_STEP=N (SIGKILL right
after the Nth applied action: the process gets no chance to clean up, as with
a power cut or an OOM kill)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers.cli import dig, nexusctl
from integration.conftest import labcfg

ROOT = Path(__file__).resolve().parents[2]
TC_PREF = 21357
MAX_STEPS = 60                     # a bound for the kill loops; the lab's up has about 26 steps


# ---------------------------------------------------------------- what is live

def _ip_link(ns: str, ifname: str) -> dict | None:
    r = subprocess.run(["ip", "-n", ns, "-j", "link", "show", "dev", ifname], capture_output=True, text=True)
    return json.loads(r.stdout)[0] if r.returncode == 0 else None


def xdp_prog(ns: str, ifname: str) -> str | None:
    link = _ip_link(ns, ifname) or {}
    return ((link.get("xdp") or {}).get("prog") or {}).get("name")


def tc_egress(ns: str, ifname: str) -> list[dict]:
    r = subprocess.run(["tc", "-n", ns, "-j", "filter", "show", "dev", ifname, "egress"], capture_output=True,
                       text=True)
    return [f for f in (json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else [])
            if f.get("pref") == TC_PREF and "options" in f]


def has_clsact(ns: str, ifname: str) -> bool:
    r = subprocess.run(["tc", "-n", ns, "-j", "qdisc", "show", "dev", ifname], capture_output=True, text=True)
    return any(q.get("kind") == "clsact" for q in (json.loads(r.stdout) if r.stdout.strip() else []))


def prog_alive(prog_id: int) -> bool:
    return subprocess.run(["bpftool", "prog", "show", "id", str(prog_id)], capture_output=True).returncode == 0


def state(lab) -> dict:
    p = lab.state_dir / "state.json"
    return json.loads(p.read_text()) if p.exists() else {}


def recorded_prog_ids(lab) -> set[int]:
    st = state(lab)
    ids = {p["id"] for o in st.get("objects", {}).values() for p in o.get("programs", {}).values()}
    ids |= {a["prog_id"] for a in st.get("attachments", {}).values() if a.get("prog_id")}
    return ids


def assert_up(lab, cfg_args) -> None:
    assert xdp_prog(lab.srv_ns, lab.srv_if) == "nexus_dns_xdp"
    assert xdp_prog(lab.cli_ns, lab.cli_if) == "nexus_xdp_pass"
    [f] = tc_egress(lab.srv_ns, lab.srv_if)
    assert f["options"]["bpf_name"].startswith("nexus_dns_tc")
    for p in ("nexus_dns_xdp", "nexus_dns_tc", "nexus_xdp_pass"):
        assert (lab.pin_root / "progs" / p).exists(), p
    assert not [p for d in ("progs", "maps", "links") for p in (lab.pin_root / d).iterdir()
                if p.name.startswith("staging_")], "staging pins left behind"
    assert dig(lab.cli_ns, lab.srv_v4, "h9.lab.test", "A", "+short").stdout.strip() == "198.19.0.9"


def assert_clean(lab, prog_ids: set[int], *, empty_state_ok: bool = False) -> None:
    assert not lab.pin_root.exists(), list(lab.pin_root.rglob("*"))
    if empty_state_ok:          # a rolled-back first run leaves a state file that records nothing
        st = state(lab)
        assert not (st.get("objects") or st.get("attachments") or st.get("links")), st
    else:
        assert not (lab.state_dir / "state.json").exists()
    assert xdp_prog(lab.srv_ns, lab.srv_if) is None
    assert xdp_prog(lab.cli_ns, lab.cli_if) is None
    assert tc_egress(lab.srv_ns, lab.srv_if) == []
    assert not has_clsact(lab.srv_ns, lab.srv_if)
    # every program any run loaded is gone from the kernel (freed after an RCU grace period)
    deadline = time.monotonic() + 10
    alive = {i for i in prog_ids if prog_alive(i)}
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = {i for i in alive if prog_alive(i)}
    assert not alive, f"programs still loaded after down: {sorted(alive)}"


def no_traceback(r) -> None:
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr


@pytest.fixture
def lab_down(lab):
    """The lab's nexus taken down for the test, and brought up again after it."""
    r = nexusctl(*labcfg(lab), "down")
    assert r.rc == 0, r.stderr
    yield lab
    r = nexusctl(*labcfg(lab), "up")
    assert r.rc == 0, r.stderr


@pytest.fixture
def lab_up(lab):
    """The lab's nexus as the lab brought it up, and so again after the test."""
    r = nexusctl(*labcfg(lab), "up")
    assert r.rc == 0, r.stderr
    yield lab
    r = nexusctl(*labcfg(lab), "up")
    assert r.rc == 0, r.stderr


def variant(lab, tmp_path: Path, edit, name: str = "nexus.yaml") -> Path:
    data = yaml.safe_load(lab.config_path.read_text())
    edit(data)
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


# ---------------------------------------------------------------- kill -9 after each step

def lean(lab, tmp_path: Path) -> list[str]:
    """The lab's config without metrics and cert: the DNS programs' plan alone
    (its every step is killed; the tracing links get the kind-boundary test)."""
    cfg = variant(lab, tmp_path, lambda d: (d.get("metrics", {}).update(enabled=False),
                                            d.get("cert", {}).update(enabled=False)), "lean.yaml")
    return ["-c", str(cfg)]


def plan_kinds(args: list[str], cmd: str = "up") -> list[str]:
    """Kinds of the steps a run would apply now, in order (its --dry-run)."""
    r = nexusctl("--json", "--dry-run", *args, cmd)
    assert r.rc == 0, r.stderr
    return [a["kind"] for a in r.json["actions"] if a["status"] == "planned"]


def kill_points(kinds: list[str]) -> list[int]:
    """1-based steps that end a run of one kind, and the first of each run."""
    pts = set()
    for i, k in enumerate(kinds):
        if i == 0 or kinds[i - 1] != k:
            pts.add(i + 1)
        if i + 1 == len(kinds) or kinds[i + 1] != k:
            pts.add(i + 1)
    return sorted(pts)


def killed_up_converges(lab, args: list[str], n: int, seen: set[int]) -> bool:
    """up killed after step n; then up converges and down leaves nothing.
    False when the plan has fewer than n steps (the run finished)."""
    r = nexusctl("--json", *args, "up", env={"NEXUS_FAULT_AFTER_STEP": str(n)})
    if r.rc == 0:
        return False
    assert r.rc == -signal.SIGKILL, (n, r.rc, r.stderr)
    state(lab)                                 # written atomically: never torn (json parses)
    seen |= recorded_prog_ids(lab)
    r = nexusctl("--json", *args, "up")
    assert r.rc == 0, (n, r.stderr)
    no_traceback(r)
    assert_up(lab, args)
    seen |= recorded_prog_ids(lab)
    r = nexusctl("--json", *args, "down")
    assert r.rc == 0, (n, r.stderr)
    assert_clean(lab, seen)
    return True


def test_up_killed_after_each_step_converges_and_down_cleans_up(lab_down, tmp_path):
    lab = lab_down
    args = lean(lab, tmp_path)
    seen: set[int] = set()
    for n in range(1, MAX_STEPS):
        if not killed_up_converges(lab, args, n, seen):
            break
    else:
        pytest.fail(f"up still had steps to run after {MAX_STEPS}")
    steps = n - 1
    assert steps >= 12, steps                      # mkdirs, maps, loads, config, attaches, policy
    print(f"up: killed after each of its {steps} steps; converged and cleaned up each time")
    r = nexusctl("--json", *args, "down")
    assert r.rc == 0, r.stderr
    assert_clean(lab, seen)


def test_up_with_tracing_links_killed_at_each_kind_of_step(lab_down):
    """The whole lab config (metrics and cert programs, tracing and perf links):
    killed after the first and the last step of each kind."""
    lab = lab_down
    kinds = plan_kinds(labcfg(lab))
    assert "attach-link" in kinds
    seen: set[int] = set()
    points = kill_points(kinds)
    for n in points:
        assert killed_up_converges(lab, labcfg(lab), n, seen), n
    print(f"up (lab config): killed after steps {points} of {len(kinds)} ({sorted(set(kinds))})")


def test_reload_killed_after_each_step_is_finished_by_up(lab_down, tmp_path):
    lab = lab_down
    args = lean(lab, tmp_path)
    r = nexusctl(*args, "up")
    assert r.rc == 0, r.stderr
    seen = recorded_prog_ids(lab)
    for n in range(1, MAX_STEPS):
        r = nexusctl("--json", *args, "reload", env={"NEXUS_FAULT_AFTER_STEP": str(n)})
        if r.rc == 0:
            break
        assert r.rc == -signal.SIGKILL, (n, r.rc, r.stderr)
        seen |= recorded_prog_ids(lab)
        # no gap: some nexus program (old or new) runs on the interface and answers
        assert xdp_prog(lab.srv_ns, lab.srv_if) == "nexus_dns_xdp"
        assert dig(lab.cli_ns, lab.srv_v4, "h9.lab.test", "A", "+short").stdout.strip() == "198.19.0.9"
        r = nexusctl("--json", *args, "up")
        assert r.rc == 0, (n, r.stderr)
        no_traceback(r)
        assert_up(lab, args)
        seen |= recorded_prog_ids(lab)
    else:
        pytest.fail(f"reload still had steps to run after {MAX_STEPS}")
    steps = n - 1
    assert steps >= 5, steps
    print(f"reload: killed after each of its {steps} steps; up finished it each time")
    assert nexusctl("--json", *args, "apply").json["changed"] is False
    r = nexusctl("--json", *args, "gc")               # no pin, attachment or record left over
    assert r.rc == 0 and r.json["found"] == [], r.stdout
    # what every run loaded and replaced is gone; only the live programs remain
    live = recorded_prog_ids(lab)
    deadline = time.monotonic() + 10
    stale = {i for i in seen - live if prog_alive(i)}
    while stale and time.monotonic() < deadline:
        time.sleep(0.2)
        stale = {i for i in stale if prog_alive(i)}
    assert not stale, f"replaced programs still loaded: {sorted(stale)}"


def _rcode_and_answer(lab, name: str) -> tuple[str, str]:
    out = dig(lab.cli_ns, lab.srv_v4, name, "A", "+noall", "+comments", "+answer").stdout
    m = re.search(r"status: (\w+)", out)
    ans = [ln.split()[-1] for ln in out.splitlines() if ln and not ln.startswith(";") and "\tA\t" in ln]
    return (m.group(1) if m else "TIMEOUT"), ",".join(ans)


def test_policy_import_killed_after_each_step(lab_down, tmp_path):
    """policy import killed after each of its steps (the list stored, the new
    generation built, put in the idle slots, switched to, the old one dropped,
    the state recorded): queries see the old rules or the new ones, never a
    mixture; up then loads the stored list; down leaves nothing."""
    lab = lab_down
    args = lean(lab, tmp_path)
    lst = tmp_path / "block.txt"
    lst.write_text("h5.lab.test\n" + "".join(f"fill{i}.faults.test\n" for i in range(2000)))
    r = nexusctl(*args, "up")
    assert r.rc == 0, r.stderr
    seen = recorded_prog_ids(lab)
    for n in range(1, MAX_STEPS):
        assert _rcode_and_answer(lab, "h5.lab.test") == ("NOERROR", "198.19.0.5")
        r = nexusctl("--json", *args, "policy", "import", str(lst), "--format", "domains", "--name", "faults",
                     env={"NEXUS_FAULT_AFTER_STEP": str(n)})
        if r.rc == 0:
            break
        assert r.rc == -signal.SIGKILL, (n, r.rc, r.stderr)
        # the old set (answered) or the new one (NXDOMAIN from XDP), never anything else
        assert _rcode_and_answer(lab, "h5.lab.test") in (("NOERROR", "198.19.0.5"), ("NXDOMAIN", "")), n
        assert _rcode_and_answer(lab, "h6.lab.test") == ("NOERROR", "198.19.0.6")
        r = nexusctl("--json", *args, "up")
        assert r.rc == 0, (n, r.stderr)
        no_traceback(r)
        assert _rcode_and_answer(lab, "h5.lab.test") == ("NXDOMAIN", ""), n      # the stored list is live
        assert nexusctl("--json", *args, "apply").json["changed"] is False
        r = nexusctl("--json", *args, "policy", "sync")          # forget the import again
        assert r.rc == 0, r.stderr
    else:
        pytest.fail(f"policy import still had steps to run after {MAX_STEPS}")
    steps = n - 1
    assert steps >= 5, steps
    print(f"policy import: killed after each of its {steps} steps; up loaded the list each time")
    assert _rcode_and_answer(lab, "h5.lab.test") == ("NXDOMAIN", "")
    r = nexusctl("--json", *args, "policy", "sync")
    assert r.rc == 0, r.stderr
    r = nexusctl("--json", *args, "down")
    assert r.rc == 0, r.stderr
    assert_clean(lab, seen | recorded_prog_ids(lab))


def test_two_nexusctl_at_once_the_second_exits_4(lab_up):
    """A reload held (SIGSTOP) after its first step keeps the lock; every command
    that changes state exits 4 meanwhile, saying who holds it; read-only ones run."""
    lab = lab_up
    env = {**os.environ, "NEXUS_FAULT_AFTER_STEP": "1", "NEXUS_FAULT_SIGNAL": "STOP"}
    first = subprocess.Popen([sys.executable, "-m", "nexusctl", "--json", *labcfg(lab), "reload"], cwd=ROOT,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while Path(f"/proc/{first.pid}/stat").read_text().split(") ")[1][0] != "T":
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first nexusctl never reached its first step"
            time.sleep(0.1)
        for cmd in (["up"], ["apply", "--check"], ["down"], ["reload"], ["gc", "--apply"]):
            r = nexusctl("--json", *labcfg(lab), *cmd)
            assert r.rc == 4, (cmd, r.rc, r.stderr)
            assert f"held by pid {first.pid}" in r.json["error"] and r.json["exit_code"] == 4, cmd
            no_traceback(r)
        r = nexusctl(*labcfg(lab), "up")
        assert r.rc == 4 and "another nexusctl is running" in r.stderr
        assert nexusctl("--json", *labcfg(lab), "status").rc == 0          # reading needs no lock
    finally:
        os.kill(first.pid, signal.SIGCONT)
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert json.loads(out)["changed"] is True
    assert nexusctl("--json", *labcfg(lab), "apply").json["changed"] is False


# ---------------------------------------------------------------- the host changes under nexus

def in_ns(*args: str, umount=(), hide=(), ro=(), timeout: float = 300):
    """nexusctl in a private mount namespace with mounts taken away (tests/helpers/inns.py)."""
    from helpers.cli import Result
    cmd = ["unshare", "--mount", "--propagation", "private", sys.executable, str(ROOT / "tests/helpers/inns.py")]
    for flag, paths in (("--umount", umount), ("--hide", hide), ("--ro-bind", ro)):
        for p in paths:
            cmd += [flag, str(p)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_FAULT")}
    p = subprocess.run([*cmd, "--", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
    return Result(p.returncode, p.stdout, p.stderr)


def test_bpffs_unmounted_under_a_running_nexus(lab_up):
    """/sys/fs/bpf not mounted (a private mount namespace, so the host keeps its own):
    status says the pins are gone and exits 0; up mounts bpffs, loads and swaps the
    attached programs; back on the host, up converges and down leaves nothing."""
    lab = lab_up
    seen = recorded_prog_ids(lab)
    r = in_ns("--json", *labcfg(lab), "status", umount=["/sys/fs/bpf"])
    assert r.rc == 0, r.stderr
    warnings = " ".join(r.json["warnings"])
    assert "not on a BPF filesystem" in warnings and "nexusctl up" in warnings
    r = in_ns("--json", *labcfg(lab), "up", umount=["/sys/fs/bpf"])
    assert r.rc == 0, r.stderr
    no_traceback(r)
    assert "mount" in {a["kind"] for a in r.json["actions"]}
    seen |= recorded_prog_ids(lab)
    assert xdp_prog(lab.srv_ns, lab.srv_if) == "nexus_dns_xdp"
    assert dig(lab.cli_ns, lab.srv_v4, "h9.lab.test", "A", "+short").stdout.strip() == "198.19.0.9"
    # the host's bpffs still holds the older pins: up puts pins and attachments together again
    r = nexusctl("--json", *labcfg(lab), "up")
    assert r.rc == 0, r.stderr
    assert_up(lab, labcfg(lab))
    assert nexusctl("--json", *labcfg(lab), "apply").json["changed"] is False
    seen |= recorded_prog_ids(lab)
    r = nexusctl("--json", *labcfg(lab), "down")
    assert r.rc == 0, r.stderr
    assert_clean(lab, seen)


def test_pin_root_bpffs_unmounted_then_up_and_down(lab_down, tmp_path):
    """pin_root outside /sys/fs/bpf is a bpffs nexusctl mounts itself; unmounted under
    a running nexus, up mounts it again and down unmounts and removes it."""
    lab = lab_down
    pin_root = lab.run_dir / "fault-bpffs"
    cfg = variant(lab, tmp_path, lambda d: d.update(pin_root=str(pin_root)))
    args = ["-c", str(cfg)]
    try:
        r = nexusctl("--json", *args, "up")
        assert r.rc == 0, r.stderr
        assert os.path.ismount(pin_root)
        seen = recorded_prog_ids(lab)
        subprocess.run(["umount", str(pin_root)], check=True)
        r = nexusctl("--json", *args, "status")
        assert r.rc == 0, r.stderr
        assert any("holds no pin" in w for w in r.json["warnings"]), r.json["warnings"]
        r = nexusctl("--json", *args, "up")
        assert r.rc == 0, r.stderr
        assert os.path.ismount(pin_root) and (pin_root / "progs" / "nexus_dns_xdp").exists()
        assert dig(lab.cli_ns, lab.srv_v4, "h9.lab.test", "A", "+short").stdout.strip() == "198.19.0.9"
        assert nexusctl("--json", *args, "apply").json["changed"] is False
        seen |= recorded_prog_ids(lab)
        r = nexusctl("--json", *args, "down")
        assert r.rc == 0, r.stderr
        assert not pin_root.exists() and not os.path.ismount(pin_root)
        assert_clean(lab, seen)
    finally:
        while os.path.ismount(pin_root):
            subprocess.run(["umount", "-l", str(pin_root)])
        if pin_root.exists():
            pin_root.rmdir()


@pytest.fixture
def extra_veth(lab):
    name, peer = f"{lab.srv_if[:-1]}f", f"{lab.srv_if[:-1]}g"
    subprocess.run(["ip", "-n", lab.srv_ns, "link", "add", name, "type", "veth", "peer", "name", peer], check=True)
    for n in (name, peer):
        subprocess.run(["ip", "-n", lab.srv_ns, "link", "set", n, "up"], check=True)
    try:
        yield name, peer
    finally:
        subprocess.run(["ip", "-n", lab.srv_ns, "link", "del", name], capture_output=True)


def test_interface_deleted_while_attached(lab_up, extra_veth, tmp_path):
    lab = lab_up
    name, peer = extra_veth
    cfg = variant(lab, tmp_path, lambda d: d["interfaces"].append(
        {"name": name, "netns": lab.srv_ns, "veth_peer": {"name": peer, "netns": lab.srv_ns}}))
    args = ["-c", str(cfg)]
    r = nexusctl("--json", *args, "up")
    assert r.rc == 0, r.stderr
    assert xdp_prog(lab.srv_ns, name) == "nexus_dns_xdp" and xdp_prog(lab.srv_ns, peer) == "nexus_xdp_pass"
    seen = recorded_prog_ids(lab)
    subprocess.run(["ip", "-n", lab.srv_ns, "link", "del", name], check=True)     # the peer goes with it
    r = nexusctl("--json", *args, "status")
    assert r.rc == 0, r.stderr
    gone = [w for w in r.json["warnings"] if "interface is gone" in w]
    assert any(f"{lab.srv_ns}/{name}" in w for w in gone) and any(f"{lab.srv_ns}/{peer}" in w for w in gone)
    # the lab's own interface is still reported attached
    progs = {p["name"]: p for p in r.json["programs"]}
    assert progs["nexus_dns_xdp"]["attachments"] == [
        {"kind": "xdp", "target": f"{lab.srv_ns}/{lab.srv_if}", "mode": "native", "role": "dns"}]
    r = nexusctl("--json", *args, "down")
    assert r.rc == 0, r.stderr
    no_traceback(r)
    assert_clean(lab, seen)


# ---------------------------------------------------------------- missing tools, read-only pins, bad config

def _real(tool: str) -> str:
    import shutil
    path = shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    assert path, tool
    return os.path.realpath(path)


def test_clang_missing_exits_3(lab, tmp_path):
    cfg = variant(lab, tmp_path, lambda d: d.update(build_dir=str(tmp_path / "build")))
    r = in_ns("--json", "-c", str(cfg), "build", hide=[_real("clang")])
    assert r.rc == 3, (r.rc, r.stderr)
    no_traceback(r)
    assert "clang is not installed" in r.json["error"] and "apt-get install clang" in r.json["hint"]
    assert not list((tmp_path / "build").glob("*.o"))


def test_bpftool_missing_exits_3_and_changes_nothing(lab_down):
    lab = lab_down
    r = in_ns("--json", *labcfg(lab), "up", hide=[_real("bpftool")])
    assert r.rc == 3, (r.rc, r.stderr)
    no_traceback(r)
    assert "bpftool is not installed" in r.json["error"] and "apt-get install bpftool" in r.json["hint"]
    assert_clean(lab, set())


def test_read_only_pin_dir(lab_up):
    """/sys/fs/bpf read-only: up from scratch fails, exit 1, leaving nothing; a reload
    fails the same way and the running programs stay attached and answering."""
    lab = lab_up
    before = recorded_prog_ids(lab)
    r = in_ns("--json", *labcfg(lab), "reload", ro=["/sys/fs/bpf"])
    assert r.rc == 1, (r.rc, r.stderr)
    no_traceback(r)
    assert "Read-only file system" in r.json["error"]
    assert recorded_prog_ids(lab) == before
    assert_up(lab, labcfg(lab))
    assert nexusctl("--json", *labcfg(lab), "apply").json["changed"] is False

    r = nexusctl("--json", *labcfg(lab), "down")
    assert r.rc == 0, r.stderr
    r = in_ns("--json", *labcfg(lab), "up", ro=["/sys/fs/bpf"])
    assert r.rc == 1, (r.rc, r.stderr)
    no_traceback(r)
    assert "Read-only file system" in r.json["error"] and "rolled back" in r.json["error"]
    assert_clean(lab, before, empty_state_ok=True)


def test_config_unreadable_missing_or_not_text_exits_2(tmp_path):
    good = tmp_path / "nexus.yaml"
    good.write_text("pin_root: /sys/fs/bpf/nexus-fault-never\n")
    good.chmod(0o600)
    tmp_path.chmod(0o755)
    # not readable: as an unprivileged user (root reads any file)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    p = subprocess.run([*nobody, sys.executable, "-m", "nexusctl", "--json", "-c", str(good), "status"],
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HOME": "/tmp"}, timeout=60)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "not readable (permission denied)" in json.loads(p.stdout)["error"]
    (tmp_path / "dir.yaml").mkdir()
    (tmp_path / "latin1.yaml").write_bytes(b"pin_root: /sys/fs/bpf/caf\xe9\n")
    for path, says in ((tmp_path / "dir.yaml", "is a directory"), (tmp_path / "latin1.yaml", "not UTF-8"),
                       (tmp_path / "missing.yaml", "not found")):
        for cmd in (["status"], ["up"], ["down"]):
            r = nexusctl("--json", "-c", str(path), *cmd)
            assert r.rc == 2, (path, cmd, r.rc, r.stderr)
            assert says in r.json["error"], r.json
            no_traceback(r)


def test_pins_and_state_are_root_only(lab_up):
    """docs/security.md: pin_root and its directories 0700, pins 0600, the state
    directory 0700 with state.json and the lock 0600 (a live lab, not a plan)."""
    import stat as st
    lab = lab_up
    for d in (lab.pin_root, *(lab.pin_root / x for x in ("progs", "maps", "links")), lab.state_dir):
        assert st.S_IMODE(d.stat().st_mode) == 0o700, d
    pins = [p for x in ("progs", "maps", "links") for p in (lab.pin_root / x).iterdir()]
    assert pins and all(st.S_IMODE(p.stat().st_mode) == 0o600 for p in pins), \
        {p.name: oct(p.stat().st_mode) for p in pins}
    for f in ("state.json", "lock"):
        assert st.S_IMODE((lab.state_dir / f).stat().st_mode) == 0o600, f
