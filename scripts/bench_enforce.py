#!/usr/bin/env python3
"""Cost of the DNS egress enforcer's cgroup programs per send, measured in the
kernel (kernel.bpf_stats_enabled: run_time_ns / run_cnt of the attached
programs), for three kinds of sends from a process in an enforced cgroup:
DNS to an allowed address, DNS to a refused one (counted, event emitted), and
a non-DNS port. Sets everything up privately (cgroup, netns, pin root),
restores bpf_stats_enabled and removes everything afterwards. JSON on stdout.

    .venv/bin/python scripts/bench_enforce.py [--sends N]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nexusctl.features.enforce import CG_PROGS, cgroup2_mount  # noqa: E402
from nexusctl.tools import libbpf as L  # noqa: E402

STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
SENDER = """
import socket, sys
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(n):
    try:
        s.sendto(b"x", socket.MSG_DONTWAIT, (addr, port))
    except (PermissionError, BlockingIOError):
        pass
"""


def prog_stats(pin_root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for prog in CG_PROGS.values():
        fd = L.obj_get(str(pin_root / "progs" / prog))
        try:
            info = L.prog_info(fd)
        finally:
            os.close(fd)
        out[prog] = (info["run_cnt"], info["run_time_ns"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sends", type=int, default=20000)
    args = ap.parse_args()
    tag = f"bench{os.getpid()}"
    cg = cgroup2_mount() / f"nexus-{tag}"
    netns = f"nxenf-{tag}"
    pin_root = Path(f"/sys/fs/bpf/nexus-{tag}")
    tmp = Path(tempfile.mkdtemp(prefix="nexus-bench-enforce-"))
    cfg = tmp / "enforce.yaml"
    cfg.write_text(f"pin_root: {pin_root}\nstate_dir: {tmp / 'state'}\nbuild_dir: {ROOT / 'build'}\n"
                   f"enforce:\n  enabled: true\n  cgroups:\n    - path: {cg.name}\n"
                   f"      allow: [198.18.99.1, 198.18.98.0/24, \"2001:db8:99::/64\"]\n")
    ctl = [sys.executable, "-m", "nexusctl", "-c", str(cfg)]
    old_stats = STATS.read_text().strip()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))     # still clean up when killed
    results = {}
    try:
        cg.mkdir()
        subprocess.run(["ip", "netns", "add", netns], check=True)
        for a in (["link", "add", "nxb0", "type", "veth", "peer", "name", "nxb1"], ["link", "set", "nxb0", "up"],
                  ["link", "set", "nxb1", "up"], ["link", "set", "lo", "up"],
                  ["addr", "add", "198.18.99.100/24", "dev", "nxb0"],
                  # the destinations are local: delivered at once (port unreachable), never
                  # queued behind an unanswered ARP that would hold the socket's buffer
                  ["addr", "add", "198.18.99.1/32", "dev", "nxb1"], ["addr", "add", "198.18.99.2/32", "dev", "nxb1"]):
            subprocess.run(["ip", "-n", netns, *a], check=True)
        subprocess.run([*ctl, "up"], check=True, capture_output=True, cwd=ROOT)
        STATS.write_text("1\n")
        for label, addr, port in (("dns_allowed", "198.18.99.1", 53), ("dns_refused", "198.18.99.2", 53),
                                  ("not_dns", "198.18.99.2", 5353)):
            before = prog_stats(pin_root)
            subprocess.run(["sh", "-c", f'echo $$ > "{cg}/cgroup.procs" && exec "$@"', "sh",
                            "ip", "netns", "exec", netns, sys.executable, "-c", SENDER, addr, str(port),
                            str(args.sends)], check=True)
            after = prog_stats(pin_root)
            cnt = sum(after[p][0] - before[p][0] for p in after)
            ns = sum(after[p][1] - before[p][1] for p in after)
            results[label] = {"runs": cnt, "ns_per_run": round(ns / cnt, 1) if cnt else None}
        # drain the events the refused sends left behind
        subprocess.run([*ctl, "--json", "enforce", "events"], capture_output=True, cwd=ROOT)
    finally:
        STATS.write_text(old_stats + "\n")
        subprocess.run([*ctl, "down"], capture_output=True, cwd=ROOT)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        if cg.exists():
            cg.rmdir()
        subprocess.run(["rm", "-rf", str(tmp)])
    print(json.dumps({"bench": "enforce", "sends": args.sends, "kernel": os.uname().release,
                      "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
