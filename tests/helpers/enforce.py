"""Helpers for enforcer tests: a private cgroup (v2), a private netns with a
dummy interface to send to, and a probe that runs in both and reports what
each send/connect returned."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "tests" / "helpers" / "enforce_probe.py"


def cgroup2_root() -> Path:
    from nexusctl.features.enforce import cgroup2_mount
    m = cgroup2_mount()
    assert m is not None, "no cgroup2 mount"
    return m


def kill_members(cg: Path) -> None:
    """SIGKILL whatever the test left in its cgroup (only processes the test started live there)."""
    for _ in range(50):
        try:
            pids = [int(p) for p in (cg / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def remove_cgroup(cg: Path) -> None:
    """Remove a test cgroup and its children, deepest first."""
    if not cg.exists():
        return
    for d in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        kill_members(d)
        d.rmdir()
    kill_members(cg)
    cg.rmdir()


def in_cgroup(cg: Path | None, netns: str | None, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    """Run argv as a new process inside cgroup cg (if given) and network namespace netns.
    The shell joins the cgroup first; `ip netns exec` then only switches the namespace
    (its fresh /sys mount would hide the cgroup filesystem)."""
    inner = (["ip", "netns", "exec", netns] if netns else []) + argv
    if cg is None:
        return subprocess.run(inner, capture_output=True, text=True, timeout=timeout)
    script = f'echo $$ > "{cg}/cgroup.procs" && exec "$@"'
    return subprocess.run(["sh", "-c", script, "sh", *inner], capture_output=True, text=True, timeout=timeout)


def probe(cg: Path | None, netns: str | None, cases: list[dict]) -> dict:
    """Each case {kind: udp|cudp|tcp, addr, port} → "ok" | errno name, from inside cg/netns.
    Returns {"pid", "comm", "results"}."""
    r = in_cgroup(cg, netns, [sys.executable, str(PROBE), json.dumps(cases)])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def case(kind: str, addr: str, port: int = 53) -> dict:
    return {"kind": kind, "addr": addr, "port": port}
