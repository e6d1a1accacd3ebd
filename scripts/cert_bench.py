#!/usr/bin/env python3
"""Certificate observer benchmark (JSON on stdout). Needs root.

- uprobe cost on the data path: CPU time per SSL_write_ex call of a python
  client writing 1-byte records to a TLS sink on loopback, without and with the
  observer attached (each call then makes an entry and a return uprobe hit),
  and with cert.probe_io: false (no probes on SSL_read/SSL_write);
- handshake cost: client CPU time per full TLS handshake (python client,
  s_server, leaf + intermediate), without and with;
- the BPF programs' own run time (kernel.bpf_stats_enabled, restored after);
- the agent: chains judged per second (analysis of a leaf + intermediate with
  two SCTs), in process.

Everything it creates (a pin root and state dir named nexus-certbench-<pid>, temp
files, the server) is removed at the end, also on failure.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DETACH_SETTLE_S = 5
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers.pki import Pki, write_json  # noqa: E402
from helpers.tls import tls_server  # noqa: E402

# A TLS sink: reads and discards until EOF (python ssl: SSL_read_ex, itself probed).
SINK_SERVER = r"""
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv = socket.create_server(("127.0.0.1", 0)); print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
with ctx.wrap_socket(conn, server_side=True) as s:
    while s.recv(65536):
        pass
"""

# CPU time (user + system) of the writing process per SSL_write_ex: the uprobe
# traps and the BPF programs run in this process's context and count here.
WRITES_CLIENT = r"""
import socket, ssl, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw, server_hostname="b.lab.test") as s:
    c, t = time.process_time_ns(), time.perf_counter_ns()
    for _ in range(n):
        s.write(b"x")
    print((time.process_time_ns() - c) / n, (time.perf_counter_ns() - t) / n)
"""

HANDSHAKE_CLIENT = r"""
import socket, ssl, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
out = []
for _ in range(n):
    c = time.process_time_ns()
    with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw, server_hostname="b.lab.test"):
        pass
    out.append(time.process_time_ns() - c)
print(" ".join(map(str, out)))
"""


def nexusctl(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nexusctl", "-c", str(cfg), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def run_client(code: str, port: int, n: int) -> str:
    return subprocess.run([sys.executable, "-c", code, str(port), str(n)], capture_output=True, text=True,
                          check=True, timeout=600).stdout.strip()


def measure(files, writes: int, handshakes: int) -> dict:
    sink = subprocess.Popen([sys.executable, "-c", SINK_SERVER, str(files["cert"]), str(files["key"])],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(sink.stdout.readline())
        cpu, wall = (float(x) for x in run_client(WRITES_CLIENT, port, writes).split())
        sink.wait(timeout=60)
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()
        sink.stdout.close()
    with tls_server(files, accepts=handshakes) as port:
        hs = [int(x) for x in run_client(HANDSHAKE_CLIENT, port, handshakes).split()]
    return {"ssl_write_cpu_ns": round(cpu, 1), "ssl_write_wall_ns": round(wall, 1),
            "handshake_cpu_us_median": round(statistics.median(hs) / 1000, 1)}


def prog_stats(pin_root: Path) -> dict:
    from nexusctl.tools import libbpf as L
    out = {}
    for pin in sorted((pin_root / "progs").iterdir()):
        fd = L.obj_get(str(pin))
        try:
            i = L.prog_info(fd)
        finally:
            os.close(fd)
        if i["run_cnt"]:
            out[pin.name] = {"runs": i["run_cnt"], "ns_per_run": round(i["run_time_ns"] / i["run_cnt"], 1)}
    return out


def agent_rate(pki: Pki, d: Path, chains: int) -> dict:
    from cryptography.hazmat.primitives import serialization
    from nexusctl.certs import analyze
    a = analyze.Analyzer(analyze.Settings(trust_store=pki.write_trust_store(d / "roots.pem"),
                                          log_list=write_json(d / "logs.json", pki.log_list())))
    issued = [pki.issue([f"h{i}.lab.test"]) for i in range(min(chains, 50))]
    inter = pki.inter.public_bytes(serialization.Encoding.DER)
    t = time.perf_counter()
    for i in range(chains):
        res = a.analyze([issued[i % len(issued)].der, inter], f"h{i % len(issued)}.lab.test")
        assert res["flags"] == [], res["flags"]
    dt = time.perf_counter() - t
    return {"chains": chains, "chains_per_s": round(chains / dt, 1), "ms_per_chain": round(dt * 1000 / chains, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--writes", type=int, default=20000)
    ap.add_argument("--handshakes", type=int, default=200)
    ap.add_argument("--chains", type=int, default=500)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("cert_bench: needs root", file=sys.stderr)
        return 3
    tag = f"nexus-certbench-{os.getpid()}"
    d = Path(tempfile.mkdtemp(prefix=tag))
    pin_root, state_dir = Path("/sys/fs/bpf") / tag, Path("/run") / tag
    cfg = d / "nexus.yaml"
    cfg.write_text(json.dumps({"pin_root": str(pin_root), "state_dir": str(state_dir),
                               "build_dir": str(ROOT / "build"), "cert": {"enabled": True}}))
    stats_path = Path("/proc/sys/kernel/bpf_stats_enabled")
    old_stats = stats_path.read_text().strip()
    out: dict = {"writes": args.writes, "handshakes": args.handshakes}
    try:
        pki = Pki()
        files = pki.issue(["b.lab.test"]).write(d, "leaf")
        out["without_observer"] = measure(files, args.writes, args.handshakes)
        r = nexusctl(cfg, "up")
        if r.returncode != 0:
            raise SystemExit(f"up failed: {r.stderr}")
        stats_path.write_text("1")
        out["with_observer"] = measure(files, args.writes, args.handshakes)
        out["bpf_programs"] = prog_stats(pin_root)
        stats_path.write_text(old_stats)
        cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "cert": {"enabled": True, "probe_io": False}}))
        r = nexusctl(cfg, "apply")
        if r.returncode != 0:
            raise SystemExit(f"apply failed: {r.stderr}")
        # Unpinned uprobe links are released asynchronously: the breakpoints stay a moment.
        time.sleep(DETACH_SETTLE_S)
        out["with_observer_probe_io_off"] = measure(files, args.writes, args.handshakes)
        w0, w1 = out["without_observer"], out["with_observer"]
        w2 = out["with_observer_probe_io_off"]
        out["overhead"] = {
            "per_ssl_write_cpu_ns": round(w1["ssl_write_cpu_ns"] - w0["ssl_write_cpu_ns"], 1),
            "per_ssl_write_cpu_ns_probe_io_off": round(w2["ssl_write_cpu_ns"] - w0["ssl_write_cpu_ns"], 1),
            "per_handshake_cpu_us": round(w1["handshake_cpu_us_median"] - w0["handshake_cpu_us_median"], 1)}
        out["agent"] = agent_rate(pki, d, args.chains)
    finally:
        stats_path.write_text(old_stats)
        nexusctl(cfg, "down")
        shutil.rmtree(state_dir, ignore_errors=True)
        shutil.rmtree(d, ignore_errors=True)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
