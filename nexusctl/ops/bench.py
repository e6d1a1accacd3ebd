"""bench: the benchmark suite (`make bench`, `nexusctl bench`).

Brings up its own lab (NEXUS_LAB_ID, never the contract names), then measures,
side by side in one run (absolute times drift on a shared machine; ratios taken
within one run hold):

1. kernel   in-program ns per packet of the attached XDP program (BPF run-time
            stats: run_time_ns / run_cnt) under real traffic of one kind at a
            time: an empty XDP_PASS program (the floor), non-DNS, cache miss,
            cache hit answered, blocked answered, malformed dropped;
2. cpu      server CPU per answered query at one offered rate: unbound alone
            (nexus detached) vs cache hits answered in XDP;
3. e2e      dnsperf max QPS and latency: unbound alone vs behind nexus with a
            warm cache, with who was the bottleneck;
4. policy   policy lookup cost with 1k/100k/1M rules, 1M-domain import time vs
            `bpftool batch file`, kernel memory per rule;
5. cli      wall time of `nexusctl status` and `nexusctl up`.

Every load is bounded in count and time. Run-time stats are turned on with
BPF_ENABLE_STATS (fd-scoped: the kernel turns them off when the fd closes,
even if this process is killed); only where that is missing is
kernel.bpf_stats_enabled written, and then restored. The lab goes down at the
end, on failure and on Ctrl-C/SIGTERM too (unless keep_lab).

This module returns data; nexusctl.ops.bench_report turns it into the table,
chart and docs, and nexusctl.cli.bench renders it.
"""
from __future__ import annotations

import errno
import hashlib
import os
import random
import re
import resource
import shutil
import signal
import statistics
import string
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from nexusctl import dga
from nexusctl.engine.build import object_path
from nexusctl.errors import NexusError, OperationFailed, UsageError
from nexusctl.paths import PROJECT_ROOT

SCENARIOS = ("kernel", "cpu", "e2e", "policy", "cli")
KINDS = ("floor", "non_dns", "cache_miss", "cache_hit", "blocked", "malformed")
# the nexus_counters slot that counts packets of each kind: how pure the traffic was
KIND_COUNTER = {"non_dns": "pass_non_dns", "cache_miss": "cache_misses", "cache_hit": "cache_hits",
                "blocked": "blocked", "malformed": "malformed"}
XDP_PROG = "nexus_dns_xdp"
TC_PROG = "nexus_dns_tc"
PEER_PROG = "nexus_xdp_pass"
FLOOR_OBJECT = "nexus_xdp_pass"
SYSCTL_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
NON_DNS_PORT = 9                    # discard: no listener in the server namespace
NEVER_LIMITED = 10_000_000          # rate-limit rate/burst in the bench config: rl_allow runs, never limits
DGA_MARGIN = 100                    # blocked names score at least threshold + this (robust to table changes)
HOT_NAMES = 1000                    # h1..h1000.lab.test, A and AAAA: the lab zone
BLOCKED_NAMES = 1000
CLK_TCK = os.sysconf("SC_CLK_TCK")
NS = 1e9

# The traffic the per-kind runs need besides DNS queries (dnsperf cannot send
# these). Paced to the same rate as the dnsperf runs, bounded in count and time.
SENDER = r"""
import socket, struct, sys, time
dst, port, count, rate, limit, kind = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                                       float(sys.argv[4]), float(sys.argv[5]), sys.argv[6])
s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
if kind == "malformed":
    # a question name whose compression pointer points at itself: the parser refuses it
    pkt = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + b"\x02h1\xc0\x0c\x00\x01\x00\x01"
else:
    pkt = bytes(40)
addr, batch, sent, t0 = (dst, port), 32, 0, time.monotonic()
while sent < count:
    for _ in range(min(batch, count - sent)):
        try:
            s.sendto(pkt, addr)
            sent += 1
        except BlockingIOError:
            time.sleep(0.001)
            break
    now = time.monotonic() - t0
    if now > limit:
        break
    if sent / rate > now:
        time.sleep(sent / rate - now)
print(sent, round(time.monotonic() - t0, 6))
"""


@dataclass
class Params:
    """How much load each scenario offers. Every run is bounded by these."""
    rate: int = 20_000              # packets (queries) per second offered in the per-kind and CPU runs
    kind_packets: int = 40_000      # packets per kind per round
    kernel_rounds: int = 5          # rounds of the per-kind measurements (medians reported)
    rounds: int = 3                 # rounds of the CPU and e2e measurements (medians reported)
    cpu_seconds: float = 5.0
    e2e_seconds: float = 5.0
    e2e_outstanding: int = 100      # dnsperf -q: queries in flight
    cli_repeats: int = 5
    up_repeats: int = 3
    policy_sizes: tuple[int, ...] = (1_000, 100_000, 1_000_000)   # the last is the import figure
    policy_rounds: int = 3
    bpftool_domains: int = 1_000_000  # updates timed through bpftool batch (scaled to the import size if fewer)

    @classmethod
    def quick(cls) -> "Params":
        return cls(kind_packets=10_000, kernel_rounds=1, rounds=1, cpu_seconds=2.0, e2e_seconds=2.0, cli_repeats=3,
                   up_repeats=1, policy_rounds=1, bpftool_domains=100_000)


@dataclass
class Options:
    quick: bool = False
    scenarios: tuple[str, ...] = SCENARIOS
    keep_lab: bool = False
    params: Params = field(default_factory=Params)


# ---------------------------------------------------------------- small readers

def median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def lab_id_for(root: Path = PROJECT_ROOT) -> str:
    """NEXUS_LAB_ID if set, else "b" + 3 hex digits of the checkout path: the bench
    never uses the contract names, and two checkouts (or the tests' "t…" lab) never
    collide."""
    env = os.environ.get("NEXUS_LAB_ID", "")
    return env or "b" + hashlib.sha1(str(root).encode()).hexdigest()[:3]


def read_sysctl(path: Path = SYSCTL_STATS) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def proc_cpu_ns(pid: int) -> int | None:
    """CPU time a process has run, in ns (/proc/PID/schedstat: exact, not tick-sampled)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return int((int(f[11]) + int(f[12])) * NS / CLK_TCK)
        except (OSError, ValueError, IndexError):
            return None


def host_cpu() -> dict:
    """Busy and softirq CPU seconds of the whole host so far (/proc/stat, tick-sampled)."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = f
    return {"busy_s": (user + nice + system + irq + softirq + steal) / CLK_TCK, "softirq_s": softirq / CLK_TCK}


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def machine() -> dict:
    info = {"kernel": os.uname().release, "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    try:
        info["load_avg"] = [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        pass
    return info


def parse_dnsperf(text: str) -> dict:
    """The figures of dnsperf's closing statistics."""
    def num(pattern: str, cast=float):
        m = re.search(pattern, text)
        return cast(m.group(1)) if m else None

    out = {"sent": num(r"Queries sent:\s+(\d+)", int), "completed": num(r"Queries completed:\s+(\d+)", int),
           "lost": num(r"Queries lost:\s+(\d+)", int), "qps": num(r"Queries per second:\s+([0-9.]+)"),
           "run_time_s": num(r"Run time \(s\):\s+([0-9.]+)"),
           "latency_avg_s": num(r"Average Latency \(s\):\s+([0-9.]+)"),
           "latency_min_s": num(r"Average Latency \(s\):.*\(min ([0-9.]+)"),
           "latency_max_s": num(r"Average Latency \(s\):.*max ([0-9.]+)\)"),
           "latency_stddev_s": num(r"Latency StdDev \(s\):\s+([0-9.]+)"), "rcodes": {}}
    m = re.search(r"Response codes:\s+(.*)", text)
    if m:
        for code, n in re.findall(r"([A-Z]+) (\d+) \(", m.group(1)):
            out["rcodes"][code] = int(n)
    if out["sent"] is None:
        raise OperationFailed("dnsperf printed no statistics", details=text[-2000:])
    return out


def dga_names(n: int, threshold: int, min_length: int, seed: int = 53) -> list[str]:
    """n random names whose registrable label the DGA scorer puts at or above
    threshold + DGA_MARGIN (scored with nexusctl.dga, the kernel's reference)."""
    rng = random.Random(seed)
    out: list[str] = []
    letters = string.ascii_lowercase + string.digits
    for _ in range(n * 200):
        if len(out) >= n:
            break
        label = "".join(rng.choice(letters) for _ in range(rng.randint(max(min_length, 12), 20)))
        if dga.score(label, min_length) >= threshold + DGA_MARGIN:
            out.append(f"{label}.test")
    if len(out) < n:
        raise OperationFailed(f"could only make {len(out)} of {n} DGA-like names for the blocked run")
    return out


# ---------------------------------------------------------------- run-time stats

class BpfStatsOn:
    """BPF run-time stats on for the life of the context.

    BPF_ENABLE_STATS first: stats count while its fd is open and the kernel
    turns them off when the fd closes (also if we are killed); the sysctl is
    not written. Where the command is missing (kernel < 5.8), write
    kernel.bpf_stats_enabled=1 and restore its previous value on exit, on an
    exception too. `before`/`after` record the sysctl for the report."""

    def __init__(self, libbpf, sysctl: Path = SYSCTL_STATS):
        self.libbpf = libbpf
        self.sysctl = sysctl
        self.fd: int | None = None
        self.method = ""
        self.before: str | None = None
        self.after: str | None = None
        self._wrote = False

    def __enter__(self):
        self.before = read_sysctl(self.sysctl)
        try:
            self.fd = self.libbpf.enable_run_time_stats()
            self.method = "BPF_ENABLE_STATS"
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            self.sysctl.write_text("1\n")
            self._wrote = True
            self.method = "sysctl kernel.bpf_stats_enabled"
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self._wrote:
            self.sysctl.write_text(f"{self.before}\n")
            self._wrote = False
        self.after = read_sysctl(self.sysctl)

    def to_json(self) -> dict:
        return {"method": self.method, "sysctl_before": self.before, "sysctl_after": self.after}


@contextmanager
def signals_interrupt():
    """SIGTERM and SIGHUP interrupt like Ctrl-C, so every `finally` (stats off,
    lab down) runs when the bench is killed politely."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextmanager
def uninterrupted():
    """Cleanup runs to the end even when Ctrl-C is pressed again meanwhile."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


# ---------------------------------------------------------------- the lab

class BenchLab:
    """The lab plus what the bench does to it: its own config, detaching nexus
    (unbound alone), the floor program swapped in, traffic from the client."""

    def __init__(self, app, progress: Callable[[str], None]):
        from nexusctl.ops.lab import LabSpec
        self.app = app
        self.spec = LabSpec.from_env()
        self.progress = progress
        self.lab_config: Path = self.spec.config_path
        self.bench_config: Path = self.spec.run_dir / "bench.yaml"
        self.files: dict[str, Path] = {}

    # ---------------------------------------------- lifecycle
    def up(self) -> dict:
        from nexusctl.ops import lab as lab_ops
        self.progress("lab up")
        return lab_ops.lab_up(self.app, with_nexus=True)

    def down(self) -> None:
        from nexusctl.ops import lab as lab_ops
        # `lab down` removes the state dir's files but not the policy store's
        # directories (imports, runtime rules): the bench's own lab, so all of it goes
        shutil.rmtree(self.spec.state_dir / "policy", ignore_errors=True)
        lab_ops.lab_down(self.app)

    def bench_config_text(self) -> str:
        """The lab's config for the measurements: rate limit that never limits one
        client (the check still runs), DGA-like names blocked, the DNS programs
        alone: metrics off (its tracepoints would add their cost to every send and
        receive being measured) and the certificate observer off (uprobes in the
        OpenSSL that unbound and dnsperf link)."""
        data = yaml.safe_load(self.lab_config.read_text())
        dns_cfg = data.setdefault("dns", {})
        dns_cfg.setdefault("rate_limit", {}).update({"enabled": True, "rate": NEVER_LIMITED, "burst": NEVER_LIMITED})
        dns_cfg.setdefault("dga", {})["mode"] = "block"
        data["metrics"] = {"enabled": False}
        if os.environ.get("NEXUS_BENCH_BLOOM"):           # to measure policy.bloom: true
            data.setdefault("policy", {})["bloom"] = os.environ["NEXUS_BENCH_BLOOM"] not in ("0", "false")
        if "cert" in data:
            data["cert"] = {"enabled": False}
        return "# generated by nexusctl bench from the lab's config\n" + yaml.safe_dump(data, sort_keys=False)

    def use_lab_config(self) -> None:
        from nexusctl.config import load_config
        self.app.config = load_config(self.lab_config)

    def use_bench_config(self) -> None:
        from nexusctl.config import load_config
        from nexusctl.ops import deploy
        self.bench_config.write_text(self.bench_config_text())
        self.app.config = load_config(self.bench_config)
        self.progress("nexus up with the bench config")
        deploy.up(self.app)

    def attach(self) -> None:
        """Everything the config attaches, attached (after detach_all or the floor swap)."""
        from nexusctl.ops import deploy
        deploy.up(self.app)

    def detach_all(self) -> None:
        """Unbound alone: nexus's XDP and TC programs off the server end and the XDP_PASS
        program off the client end; pinned maps (the warm cache) stay."""
        from nexusctl.engine.kernel import DetachTc, DetachXdp
        s = self.spec
        with self.app.lock():
            ctx = self.app.ctx()
            for a in (DetachTc(s.srv_if, s.srv_ns, "egress"), DetachXdp(s.srv_if, s.srv_ns),
                      DetachXdp(s.cli_if, s.cli_ns)):
                if not a.satisfied(ctx):
                    a.apply(ctx)

    @contextmanager
    def floor_program(self):
        """A fresh instance of the empty XDP_PASS program attached to the server end
        in place of the DNS program; yields its fd. The DNS program goes back after."""
        L = self.app.runner.libbpf
        path = object_path(self.app.config.build_dir, FLOOR_OBJECT)
        with L.BpfObject(str(path)) as obj:
            obj.load()
            fd = obj.prog_fd(FLOOR_OBJECT)
            prog_id = L.prog_info(fd)["id"]
            s = self.spec
            try:
                self.app.runner.run(["bpftool", "net", "attach", "xdpdrv", "id", str(prog_id), "dev", s.srv_if,
                                     "overwrite"], netns=s.srv_ns)
                yield fd
            finally:
                self.attach()

    # ---------------------------------------------- readers
    def programs(self) -> dict[str, dict]:
        from nexusctl.ops.stats import read_programs
        return read_programs(self.app)

    def counters(self) -> dict[str, int]:
        from nexusctl.ops.stats import read_counters
        return read_counters(self.app)

    def unbound_pid(self) -> int:
        from nexusctl.ops.lab import _pid_alive
        pid = _pid_alive(self.spec.unbound_pid)
        if not pid:
            raise OperationFailed("the lab's unbound is not running", "run `nexusctl lab up`")
        return pid

    # ---------------------------------------------- traffic
    def write_files(self, params: Params) -> None:
        d = self.spec.run_dir
        hot = d / "bench-hot.txt"
        hot.write_text("".join(f"h{i}.lab.test A\nh{i}.lab.test AAAA\n" for i in range(1, HOT_NAMES + 1)))
        cfg = self.app.config.dns.dga
        blocked = d / "bench-blocked.txt"
        blocked.write_text("".join(f"{n} A\n" for n in dga_names(BLOCKED_NAMES, cfg.threshold, cfg.min_length)))
        self.files = {"hot": hot, "blocked": blocked}

    def miss_file(self, tag: str, n: int) -> Path:
        """n names never asked before (NXDOMAIN from the lab zone, whose short
        registrable label "lab" the DGA scorer leaves alone)."""
        p = self.spec.run_dir / "bench-miss.txt"
        p.write_text("".join(f"m{tag}-{i}.lab.test A\n" for i in range(n)))
        return p

    def dnsperf(self, datafile: Path, *, rate: int | None = None, seconds: float | None = None,
                passes: int | None = None, outstanding: int = 100, timeout_s: int = 2) -> dict:
        """dnsperf from the client namespace; its statistics plus the CPU it used."""
        argv = ["dnsperf", "-s", self.spec.srv_v4, "-d", str(datafile), "-c", "1", "-q", str(outstanding),
                "-t", str(timeout_s)]
        if rate:
            argv += ["-Q", str(int(rate))]
        if seconds:
            argv += ["-l", f"{seconds:g}"]
        if passes:
            argv += ["-n", str(passes)]
        with datafile.open("rb") as f:
            lines = sum(1 for _ in f)
        # a bound on the run, with room for a slow machine: by time, or lines × passes at the rate
        bound = (seconds or lines * (passes or 1) / (rate or 10_000)) * 2 + 60
        cpu0 = children_cpu_s()
        res = self.app.runner.run(argv, netns=self.spec.cli_ns, timeout=bound, check=False)
        out = parse_dnsperf(res.stdout + res.stderr)
        out["dnsperf_cpu_s"] = round(children_cpu_s() - cpu0, 4)
        return out

    def send(self, kind: str, count: int, rate: int) -> int:
        """count packets of a non-dnsperf kind (non_dns, malformed), paced to rate."""
        port = NON_DNS_PORT if kind == "non_dns" else 53
        limit = count / rate * 3 + 5
        res = self.app.runner.run([sys.executable, "-c", SENDER, self.spec.srv_v4, str(port), str(count), str(rate),
                                   str(limit), kind], netns=self.spec.cli_ns, timeout=limit + 30)
        return int(res.stdout.split()[0])

    def warm(self) -> dict:
        """Every hot name asked once: the resolver answers, TC fills the cache."""
        return self.dnsperf(self.files["hot"], passes=1, rate=20_000)


# ---------------------------------------------------------------- scenario 1: kernel cost

def _delta(before: dict, after: dict, name: str) -> tuple[int, int]:
    b, a = before.get(name), after.get(name)
    if not a or not b or a["id"] != b["id"]:
        return 0, 0
    return a["run_cnt"] - b["run_cnt"], a["run_time_ns"] - b["run_time_ns"]


def _traffic(lab: BenchLab, kind: str, p: Params, tag: str) -> None:
    passes = max(1, round(p.kind_packets / (2 * HOT_NAMES)))
    if kind in ("floor", "non_dns"):
        lab.send("non_dns", p.kind_packets, p.rate)
    elif kind == "malformed":
        lab.send("malformed", p.kind_packets, p.rate)
    elif kind == "cache_hit":
        lab.dnsperf(lab.files["hot"], rate=p.rate, passes=passes)
    elif kind == "blocked":
        lab.dnsperf(lab.files["blocked"], rate=p.rate, passes=max(1, round(p.kind_packets / BLOCKED_NAMES)))
    elif kind == "cache_miss":
        lab.dnsperf(lab.miss_file(tag, p.kind_packets), rate=p.rate, passes=1)


def measure_kind(lab: BenchLab, kind: str, p: Params, tag: str) -> dict:
    """ns per packet of the attached program for one kind of traffic."""
    L = lab.app.runner.libbpf
    if kind == "floor":
        with lab.floor_program() as fd:
            i0 = L.prog_info(fd)
            t0 = time.monotonic()
            _traffic(lab, kind, p, tag)
            wall = time.monotonic() - t0
            i1 = L.prog_info(fd)
        runs, ns = i1["run_cnt"] - i0["run_cnt"], i1["run_time_ns"] - i0["run_time_ns"]
        return {"runs": runs, "ns": ns, "ns_per_packet": ns / runs if runs else None, "purity": None,
                "wall_s": round(wall, 3)}
    if kind == "cache_hit":
        lab.warm()
    c0, p0 = lab.counters(), lab.programs()
    t0 = time.monotonic()
    _traffic(lab, kind, p, tag)
    wall = time.monotonic() - t0
    c1, p1 = lab.counters(), lab.programs()
    runs, ns = _delta(p0, p1, XDP_PROG)
    tc_runs, tc_ns = _delta(p0, p1, TC_PROG)
    counted = c1.get(KIND_COUNTER[kind], 0) - c0.get(KIND_COUNTER[kind], 0)
    return {"runs": runs, "ns": ns, "ns_per_packet": ns / runs if runs else None,
            "purity": round(counted / runs, 4) if runs else None, "counted": counted,
            "tc_runs": tc_runs, "tc_ns_per_run": tc_ns / tc_runs if tc_runs else None, "wall_s": round(wall, 3)}


def scenario_kernel(lab: BenchLab, p: Params) -> dict:
    samples: dict[str, list[dict]] = {k: [] for k in KINDS}
    for r in range(p.kernel_rounds):
        # interleaved, so drift in the machine's load touches every kind alike
        for kind in KINDS:
            lab.progress(f"kernel cost: {kind.replace('_', ' ')} (round {r + 1}/{p.kernel_rounds})")
            samples[kind].append(measure_kind(lab, kind, p, f"{os.getpid()}r{r}"))
    kinds = {}
    for kind, ss in samples.items():
        kinds[kind] = {"ns_per_packet": _round(median([s["ns_per_packet"] for s in ss]), 1),
                       "samples_ns": [_round(s["ns_per_packet"], 1) for s in ss],
                       "runs": sum(s["runs"] for s in ss),
                       "purity": _round(median([s["purity"] for s in ss]), 4)}
        if kind == "cache_miss":
            kinds[kind]["tc_ns_per_answer"] = _round(median([s["tc_ns_per_run"] for s in ss]), 1)
    floor = kinds["floor"]["ns_per_packet"]
    for kind, d in kinds.items():
        if floor and d["ns_per_packet"] is not None:
            d["vs_floor"] = round(d["ns_per_packet"] / floor, 2)
            d["above_floor_ns"] = round(d["ns_per_packet"] - floor, 1)
    return {"rate_pps": p.rate, "packets_per_kind_per_round": p.kind_packets, "rounds": p.kernel_rounds,
            "program": XDP_PROG, "kinds": kinds}


# ---------------------------------------------------------------- scenarios 2 and 3: resolver vs kernel

def _load_run(lab: BenchLab, mode: str, *, rate: int | None, seconds: float, outstanding: int) -> dict:
    """One dnsperf run over the hot names with CPU accounting: the resolver's (exact),
    nexus programs' (run-time stats), dnsperf's, and the whole host's."""
    pid = lab.unbound_pid()
    if mode == "kernel":
        lab.warm()
    p0, c0, u0, h0 = lab.programs(), lab.counters(), proc_cpu_ns(pid), host_cpu()
    t0 = time.monotonic()
    d = lab.dnsperf(lab.files["hot"], rate=rate, seconds=seconds, outstanding=outstanding)
    wall = time.monotonic() - t0
    p1, c1, u1, h1 = lab.programs(), lab.counters(), proc_cpu_ns(pid), host_cpu()
    xdp_runs, xdp_ns = _delta(p0, p1, XDP_PROG)
    _, tc_ns = _delta(p0, p1, TC_PROG)
    _, peer_ns = _delta(p0, p1, PEER_PROG)
    answers = d["completed"] or 0
    run_s = d["run_time_s"] or wall
    unbound_ns = (u1 - u0) if u0 is not None and u1 is not None else 0
    server_ns = unbound_ns + xdp_ns + tc_ns
    out = {
        "answers": answers, "qps": _round(d["qps"], 1), "lost": d["lost"], "rcodes": d["rcodes"],
        "latency_avg_us": _round((d["latency_avg_s"] or 0) * 1e6, 1),
        "latency_max_us": _round((d["latency_max_s"] or 0) * 1e6, 1),
        "unbound_cpu_ns": unbound_ns, "xdp_ns": xdp_ns, "tc_ns": tc_ns, "peer_xdp_ns": peer_ns,
        "server_cpu_ns_per_query": _round(server_ns / answers, 1) if answers else None,
        "unbound_cpu_ns_per_query": _round(unbound_ns / answers, 1) if answers else None,
        "xdp_ns_per_query": _round(xdp_ns / answers, 1) if answers else None,
        "host_cpu_ns_per_query": _round((h1["busy_s"] - h0["busy_s"]) * NS / answers, 1) if answers else None,
        "dnsperf_cpu_ns_per_query": _round(d["dnsperf_cpu_s"] * NS / answers, 1) if answers else None,
        "unbound_cores": round(unbound_ns / NS / run_s, 3),
        "dnsperf_cores": round(d["dnsperf_cpu_s"] / run_s, 3),
        "host_busy_cores": round((h1["busy_s"] - h0["busy_s"]) / wall, 3),
        "cache_hits": c1.get("cache_hits", 0) - c0.get("cache_hits", 0),
    }
    if mode == "kernel":
        out["hit_share"] = round(out["cache_hits"] / answers, 4) if answers else None
    return out


def _median_runs(runs: list[dict]) -> dict:
    """Field-wise median of numeric fields over rounds (the other fields from the first)."""
    out = dict(runs[0])
    for k, v in runs[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            m = median([r.get(k) for r in runs])
            out[k] = _round(m, 3) if isinstance(m, float) else m
    out["rounds"] = len(runs)
    return out


def _both_modes(lab: BenchLab, p: Params, what: str, **kw) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {"unbound_alone": [], "kernel": []}
    for r in range(p.rounds):
        lab.progress(f"{what}: unbound alone (round {r + 1}/{p.rounds})")
        lab.detach_all()
        try:
            runs["unbound_alone"].append(_load_run(lab, "alone", **kw))
        finally:
            lab.attach()
        lab.progress(f"{what}: nexus, warm cache (round {r + 1}/{p.rounds})")
        runs["kernel"].append(_load_run(lab, "kernel", **kw))
    return runs


def scenario_cpu(lab: BenchLab, p: Params) -> dict:
    runs = _both_modes(lab, p, "server CPU", rate=p.rate, seconds=p.cpu_seconds, outstanding=100)
    alone, kern = _median_runs(runs["unbound_alone"]), _median_runs(runs["kernel"])
    out = {"rate_qps": p.rate, "seconds": p.cpu_seconds, "unbound_alone": alone, "kernel": kern}
    a, k = alone.get("server_cpu_ns_per_query"), kern.get("server_cpu_ns_per_query")
    out["ratio"] = round(a / k, 1) if a and k else None
    ah, kh = alone.get("host_cpu_ns_per_query"), kern.get("host_cpu_ns_per_query")
    out["host_ratio"] = round(ah / kh, 2) if ah and kh else None
    return out


def bottleneck(run: dict, ncpus: int) -> str:
    """Which side held the max QPS back, from the CPU each used during the run."""
    if run.get("unbound_cores", 0) >= 0.9:
        return "unbound (one thread: a full core)"
    if run.get("dnsperf_cores", 0) >= 0.9:
        return "dnsperf (the client: its threads and the softirq work charged to it)"
    if run.get("host_busy_cores", 0) >= 0.9 * ncpus:
        return "the host's CPUs (all busy, shared with other work)"
    return "none saturated (bounded by outstanding queries and latency)"


def scenario_e2e(lab: BenchLab, p: Params) -> dict:
    runs = _both_modes(lab, p, "max QPS", rate=None, seconds=p.e2e_seconds, outstanding=p.e2e_outstanding)
    ncpus = os.cpu_count() or 1
    out = {"seconds": p.e2e_seconds, "outstanding": p.e2e_outstanding}
    for mode in ("unbound_alone", "kernel"):
        m = _median_runs(runs[mode])
        m["qps_samples"] = [r["qps"] for r in runs[mode]]
        m["bottleneck"] = bottleneck(m, ncpus)
        out[mode] = m
    a, k = out["unbound_alone"].get("qps"), out["kernel"].get("qps")
    out["qps_ratio"] = round(k / a, 2) if a and k else None
    return out


# ---------------------------------------------------------------- scenario 4: policy

POLICY_ZONE = "policy.test"         # rule names d<i>.policy.test: "policy" is too short for the DGA scorer
# distinct blocked names queried at every rule-set size (the smallest set's size): only the table
# size changes between sizes, not how many different entries the queries touch
POLICY_QUERY_NAMES = 1_000
BATCH = 65_536                      # updates per libbpf batch syscall (as nexusctl.policy.kernel does)


def _policy_list(lab: BenchLab, n: int) -> Path:
    path = lab.spec.run_dir / "bench-rules.txt"
    with path.open("w") as f:
        for i in range(n):
            f.write(f"d{i}.{POLICY_ZONE}\n")
    return path


def _policy_queries(lab: BenchLab, n: int) -> Path:
    """Queries for names the rule set blocks, spread over the whole set."""
    rng = random.Random(n)
    picks = rng.sample(range(n), min(n, POLICY_QUERY_NAMES))
    path = lab.spec.run_dir / "bench-policy-queries.txt"
    path.write_text("".join(f"d{i}.{POLICY_ZONE} A\n" for i in picks))
    return path


def _policy_cost(lab: BenchLab, p: Params, queries: Path, nq: int) -> dict:
    """XDP ns/packet for queries a rule blocks (answered from XDP) and for
    queries no rule matches (cache hits of the hot names), medians of rounds."""
    out: dict[str, list] = {"match": [], "no_match": []}
    purity: dict[str, list] = {"match": [], "no_match": []}
    for _ in range(p.policy_rounds):
        for what, counter in (("match", "policy_blocked"), ("no_match", "cache_hits")):
            if what == "no_match":
                lab.warm()
            c0, p0 = lab.counters(), lab.programs()
            if what == "match":
                lab.dnsperf(queries, rate=p.rate, passes=max(1, round(p.kind_packets / nq)))
            else:
                lab.dnsperf(lab.files["hot"], rate=p.rate, passes=max(1, round(p.kind_packets / (2 * HOT_NAMES))))
            c1, p1 = lab.counters(), lab.programs()
            runs, ns = _delta(p0, p1, XDP_PROG)
            out[what].append(ns / runs if runs else None)
            purity[what].append((c1.get(counter, 0) - c0.get(counter, 0)) / runs if runs else None)
    return {"ns_per_packet": _round(median(out["match"]), 1), "samples_ns": [_round(x, 1) for x in out["match"]],
            "purity": _round(median(purity["match"]), 4),
            "no_match_ns_per_packet": _round(median(out["no_match"]), 1),
            "no_match_samples_ns": [_round(x, 1) for x in out["no_match"]],
            "no_match_purity": _round(median(purity["no_match"]), 4)}


def _ctl_json(lab: BenchLab, *args: str, timeout: float = 600) -> tuple[float, dict]:
    """A nexusctl command on the bench config, as an operator runs it: (wall s, its JSON)."""
    import json
    res = lab.app.runner.run([*_nexusctl_argv(), "-c", str(lab.bench_config), "--json", *args], timeout=timeout,
                             check=False)
    if res.rc != 0:
        raise OperationFailed(f"nexusctl {' '.join(args[:2])} failed: {res.stderr.strip()[-300:]}")
    return res.duration, json.loads(res.stdout)


def _import_vs_bpftool(lab: BenchLab, n: int) -> dict:
    """The same n rule keys and values loaded into a scratch map like the live rule
    map, once through `bpftool batch file` (one `map update` line each) and once
    through libbpf batch updates: the kernel-loading step alone, side by side."""
    from nexusctl.policy import hashing
    from nexusctl.policy.kernel import BLOOM_HASHES, KEY_SIZE, PolicyKernel, _memlock
    from nexusctl.policy.rules import Attrs
    L = lab.app.runner.libbpf
    cfg = lab.app.config
    with PolicyKernel(lab.app.runner, cfg.pin_root, cfg.policy.max_rules) as pk:
        seeds = pk.seeds()
        vsize = pk.val_layout.size
        names = [f"d{i}.{POLICY_ZONE}" for i in range(n)]
        keys = hashing.keys_for_names(names, hashing.EXACT, seeds)
        value = Attrs.make("block", 1000).value(pk.val_layout, len(names[-1]))
    values = value * n
    pin = cfg.pin_root / "bench_scratch_rules"          # under the lab's pin root: `lab down` removes it
    batch = lab.spec.run_dir / "bench-bpftool.batch"
    out: dict = {"rules": n}
    fds = []
    try:
        for _ in range(2):
            fds.append(L.map_create(L.MAP_HASH, "nexus_bench_r", KEY_SIZE, vsize, cfg.policy.max_rules,
                                    L.BPF_F_NO_PREALLOC))
        L.obj_pin(fds[0], str(pin))
        empty = _memlock(fds[1])
        out["rule_map_empty_bytes"] = empty
        if cfg.policy.bloom:
            # the bloom filter in front of the rules is sized by max_rules, whatever the rule count
            bfd = L.map_create(L.MAP_BLOOM_FILTER, "nexus_bench_b", 0, KEY_SIZE, cfg.policy.max_rules, 0,
                               BLOOM_HASHES)
            fds.append(bfd)
            out["bloom_bytes"] = _memlock(bfd)
        vhex = value.hex(" ")
        with batch.open("w") as f:
            for i in range(n):
                k = keys[i * KEY_SIZE:(i + 1) * KEY_SIZE].hex(" ")
                f.write(f"map update pinned {pin} key hex {k} value hex {vhex}\n")
        res = lab.app.runner.run(["bpftool", "batch", "file", str(batch)], timeout=600)
        out["bpftool_s"] = round(res.duration, 3)
        with L.MapHandle(fds[1], owned=False) as m:
            t0 = time.monotonic()
            for i in range(0, n, BATCH):
                j = min(i + BATCH, n)
                m.update_batch(keys[i * KEY_SIZE:j * KEY_SIZE], values[i * vsize:j * vsize], j - i)
            out["libbpf_batch_s"] = round(time.monotonic() - t0, 3)
            mem = _memlock(fds[1])
        out["memory_bytes"] = mem
        out["bytes_per_rule"] = round((mem - empty) / n, 1) if mem and empty is not None else None
    finally:
        for fd in fds:
            os.close(fd)
        pin.unlink(missing_ok=True)
        batch.unlink(missing_ok=True)
    return out


def scenario_policy(lab: BenchLab, p: Params) -> dict:
    try:
        from nexusctl.policy import kernel as _  # noqa: F401 - the policy engine (issue 4)
    except ImportError:
        return {"status": "pending",
                "reason": "the policy engine's user-space side (nexusctl/policy) is not on this branch yet"}
    out: dict = {"rate_pps": p.rate, "rounds": p.policy_rounds, "zone": POLICY_ZONE, "lookup": [], "import": {},
                 "bloom": lab.app.config.policy.bloom}
    try:
        for n in p.policy_sizes:
            lab.progress(f"policy: import {n:,} domains")
            wall, imp = _ctl_json(lab, "policy", "import", str(_policy_list(lab, n)), "--format", "domains",
                                  "--name", "bench")
            k = imp.get("kernel") or {}
            row = {"rules": n, "import_wall_s": round(wall, 3), "import_s": imp.get("seconds"),
                   "parse_s": imp.get("parse_seconds"), "kernel_s": k.get("seconds"),
                   "hash_s": k.get("hash_seconds"), "fill_s": k.get("fill_seconds"),
                   "live_rules": k.get("rules"), "memory_bytes": k.get("memory_bytes"),
                   "bytes_per_rule": k.get("bytes_per_rule")}
            lab.progress(f"policy: lookup cost with {n:,} rules")
            nq = min(n, POLICY_QUERY_NAMES)
            row.update(_policy_cost(lab, p, _policy_queries(lab, n), nq))
            out["lookup"].append(row)
        rows = out["lookup"]
        lo, hi = rows[0].get("ns_per_packet"), rows[-1].get("ns_per_packet")
        out["lookup_ratio_max_vs_min"] = round(hi / lo, 3) if lo and hi else None
        lo, hi = rows[0].get("no_match_ns_per_packet"), rows[-1].get("no_match_ns_per_packet")
        out["no_match_ratio_max_vs_min"] = round(hi / lo, 3) if lo and hi else None
        big = rows[-1]
        small = rows[0]
        lab.progress(f"policy: {p.bpftool_domains:,} updates through bpftool batch file and libbpf batch")
        cmp = _import_vs_bpftool(lab, p.bpftool_domains)
        scale = big["rules"] / cmp["rules"]
        imp = {"domains": big["rules"], "libbpf_s": big["import_wall_s"], "importer_s": big.get("import_s"),
               "parse_s": big.get("parse_s"), "hash_s": big.get("hash_s"), "fill_s": big.get("fill_s"),
               "kernel_s": big.get("kernel_s"),
               "bpftool_s": round(cmp["bpftool_s"] * scale, 2),
               "raw_libbpf_batch_s": round(cmp["libbpf_batch_s"] * scale, 3),
               "bpftool_basis": (f"{cmp['rules']:,} updates timed" if scale == 1 else
                                 f"{cmp['rules']:,} updates timed, ×{scale:g}"),
               "compare": cmp}
        imp["speedup_vs_bpftool"] = round(imp["bpftool_s"] / imp["libbpf_s"], 2) if imp["libbpf_s"] else None
        imp["raw_speedup_vs_bpftool"] = (round(imp["bpftool_s"] / imp["raw_libbpf_batch_s"], 1)
                                         if imp["raw_libbpf_batch_s"] else None)
        out["import"] = imp
        # memory: what each rule adds to the rule map (the growth between the smallest and the
        # largest set loaded), what the map costs empty (its buckets, sized by policy.max_rules),
        # and the bloom filter (also sized by max_rules)
        mem = {"rule_map_empty_bytes": cmp.get("rule_map_empty_bytes"), "bloom_bytes": cmp.get("bloom_bytes"),
               "bloom": lab.app.config.policy.bloom, "scratch_bytes_per_rule": cmp.get("bytes_per_rule"),
               "max_rules": lab.app.config.policy.max_rules}
        if big.get("memory_bytes") and small.get("memory_bytes") and big["rules"] > small["rules"]:
            mem["bytes_per_rule"] = round((big["memory_bytes"] - small["memory_bytes"]) /
                                          (big["rules"] - small["rules"]), 1)
        else:
            mem["bytes_per_rule"] = cmp.get("bytes_per_rule")
        out["memory"] = mem
        out["bytes_per_rule"] = mem["bytes_per_rule"]
    finally:
        # the imported rules out of the kernel and the state dir (policy sync forgets imports)
        lab.progress("policy: sync (drop the imported rules)")
        try:
            _ctl_json(lab, "policy", "sync")
        finally:
            for f in ("bench-rules.txt", "bench-policy-queries.txt"):
                (lab.spec.run_dir / f).unlink(missing_ok=True)
    return out


# ---------------------------------------------------------------- scenario 5: CLI

def _nexusctl_argv() -> list[str]:
    exe = Path(sys.executable).with_name("nexusctl")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "nexusctl"]


def _timed(lab: BenchLab, *args: str) -> float:
    """Wall ms of one nexusctl run, as a user starts it (interpreter start included).
    No runner timeout: arming one makes sh poll, which would add to the time."""
    if args == ("startup",):
        # Python starting and importing the CLI's entry module (typer, rich, the app object),
        # which every command pays before its own module is imported
        argv = [sys.executable, "-c", "import nexusctl.cli.app"]
    else:
        argv = [*_nexusctl_argv(), "-c", str(lab.lab_config), "--json", *args]
    res = lab.app.runner.run(argv)
    if res.rc != 0:
        raise OperationFailed(f"nexusctl {' '.join(args)} failed: {res.stderr.strip()[-300:]}")
    return round(res.duration * 1000, 1)


def scenario_cli(lab: BenchLab, p: Params) -> dict:
    """With the lab's own config (every feature this kernel supports) and built objects."""
    lab.progress("CLI: nexusctl status")
    _timed(lab, "status")                      # page cache and bytecode warm, like a second run
    status = [_timed(lab, "status") for _ in range(p.cli_repeats)]
    # the part of every command that is Python starting and importing the CLI
    startup = [_timed(lab, "startup") for _ in range(p.cli_repeats)]
    lab.progress("CLI: nexusctl up (nothing to do)")
    noop = [_timed(lab, "up") for _ in range(p.cli_repeats)]
    cold, down = [], []
    for i in range(p.up_repeats):
        lab.progress(f"CLI: nexusctl down; nexusctl up ({i + 1}/{p.up_repeats})")
        down.append(_timed(lab, "down"))
        cold.append(_timed(lab, "up"))
    return {"config": "lab", "status_ms": {"median": median(status), "samples": status},
            "startup_ms": {"median": median(startup), "samples": startup},
            "up_noop_ms": {"median": median(noop), "samples": noop},
            "up_ms": {"median": median(cold), "samples": cold},
            "down_ms": {"median": median(down), "samples": down}}


# ---------------------------------------------------------------- the whole run

def _round(x, nd: int):
    return None if x is None else round(x, nd)


def _tool_version(app, argv: list[str], pattern: str) -> str | None:
    try:
        res = app.runner.run(argv, check=False, quiet=True, timeout=10)
    except NexusError:
        return None
    m = re.search(pattern, res.stdout + res.stderr)
    return m.group(1) if m else None


def run(app, opts: Options, progress: Callable[[str], None] = lambda s: None) -> dict:
    """Every selected scenario, in one lab; the results document."""
    if os.geteuid() != 0:
        raise UsageError("the benchmarks need root (network namespaces, BPF)", "run it as root")
    bad = [s for s in opts.scenarios if s not in SCENARIOS]
    if bad:
        raise UsageError(f"unknown scenario(s) {', '.join(bad)}", f"choose from {', '.join(SCENARIOS)}")
    os.environ["NEXUS_LAB_ID"] = lab_id_for()
    p = opts.params
    started = time.time()
    doc = {"bench": "nexus", "version": 1, "date": time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(started)),
           "quick": opts.quick, "lab_id": os.environ["NEXUS_LAB_ID"], "params": asdict(p),
           "machine": machine(), "scenarios": {}, "errors": {}}
    doc["machine"]["unbound"] = _tool_version(app, ["unbound", "-V"], r"Version ([0-9.]+)")
    doc["machine"]["dnsperf"] = _tool_version(app, ["dnsperf", "-h"], r"Version ([0-9.]+)")
    lab = BenchLab(app, progress)
    stats = BpfStatsOn(app.runner.libbpf)
    try:
        with signals_interrupt():
            lab.up()
            if "cli" in opts.scenarios:
                _guarded(doc, "cli", lambda: scenario_cli(lab, p))
                lab.use_lab_config()
                lab.attach()                        # whatever state the last step left
            lab.use_bench_config()
            lab.write_files(p)
            with stats:
                for name, fn in (("kernel", scenario_kernel), ("cpu", scenario_cpu), ("e2e", scenario_e2e),
                                 ("policy", scenario_policy)):
                    if name in opts.scenarios:
                        _guarded(doc, name, lambda fn=fn: fn(lab, p))
    finally:
        with uninterrupted():
            # `with stats` has turned them off (or restored the sysctl) by now
            doc["bpf_stats"] = stats.to_json() if stats.method else {"method": "", "sysctl_before": read_sysctl(),
                                                                     "sysctl_after": read_sysctl()}
            if not opts.keep_lab:
                progress("lab down")
                try:
                    lab.down()
                except NexusError as e:
                    doc["errors"]["lab_down"] = e.message
    doc["duration_s"] = round(time.time() - started, 1)
    doc["machine"]["load_avg_after"] = machine().get("load_avg")
    return doc


def _guarded(doc: dict, name: str, fn: Callable[[], dict]) -> None:
    """A failing scenario is recorded and the others still run; Ctrl-C is not caught."""
    try:
        doc["scenarios"][name] = fn()
    except (NexusError, OSError) as e:
        msg = e.message if isinstance(e, NexusError) else str(e)
        doc["errors"][name] = msg
        doc["scenarios"][name] = {"status": "failed", "reason": msg}
