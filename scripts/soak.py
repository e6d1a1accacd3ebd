#!/usr/bin/env python3
"""Soak: dnsperf through a lab for a long while (10 minutes by default) while
reloads, policy imports and cache flushes run every few seconds; then a JSON
report. Run with `make soak` (SOAK_ARGS="--minutes 2" to shorten).

What it checks, and the report says:
- queries lost: dnsperf's count, against the drops the kernel made on purpose
  and counted ("designated": rate limiting, the policy's egress drops of
  answers for names that became blocked while their query was at the resolver,
  malformed queries). Unexplained losses must be 0. A second, small stream asks
  for names an RPZ `rpz-drop` rule drops: every one of those is lost by design
  and reported apart.
- maps within bounds: the cache, rate-limit and in-flight maps' peak fill
  against their max_entries, sampled every few seconds;
- kernel memory stable: the BPF memory (memlock) of everything nexus has live
  (programs, pinned maps, the policy generations' inner maps) after the
  warm-up and at the end, and that every program a reload replaced and every
  map a policy swap retired is gone from the kernel; /proc/meminfo's slab and
  per-CPU figures are reported alongside (the machine is shared: not judged);
- every operation succeeded (exit 0), how long each took.

The lab is its own (NEXUS_LAB_ID, default "rsk") and is removed at the end
unless --keep. Exit status: 0 when every check holds, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLE_EVERY = 5.0           # seconds between map/memory samples
WARMUP = 60.0                # the memory baseline is taken this long after the start (or at 1/4 of a short run)
MEM_GROWTH_LIMIT = 0.10      # BPF memory may grow by 10% after the warm-up (hash maps filling up) and no more
BOUNDED_MAPS = ("nexus_cache", "nexus_ratelimit", "nexus_inflight")
TOGGLE = range(901, 951)     # h901..h950 are blocked in every other policy generation
DROP_NAMES = 20              # rpz-drop names queried by the designated-drop stream


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Lab:
    def __init__(self, lab_id: str):
        os.environ["NEXUS_LAB_ID"] = lab_id
        from nexusctl.ops.lab import LabSpec
        self.spec = LabSpec.from_env()
        self.env = {**os.environ, "NEXUS_LAB_ID": lab_id}
        self.env.pop("NEXUS_FAULT_AFTER_STEP", None)

    def nexusctl(self, *args: str, timeout: float = 600) -> tuple[int, dict | None, str, float]:
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "nexusctl", "--json", *args], capture_output=True, text=True,
                           cwd=ROOT, env=self.env, timeout=timeout)
        try:
            doc = json.loads(p.stdout) if p.stdout.strip() else None
        except json.JSONDecodeError:
            doc = None
        return p.returncode, doc, p.stderr, time.monotonic() - t0

    def cfg(self) -> list[str]:
        return ["-c", str(self.spec.config_path)]


# ------------------------------------------------------------------ inputs

def write_inputs(d: Path) -> dict[str, Path]:
    q = d / "queries.txt"
    q.write_text("".join(f"h{i}.lab.test {t}\n" for i in range(1, 1001) for t in ("A", "AAAA")))
    drops = d / "drops.txt"
    drops.write_text("".join(f"drop{i}.soak.test A\n" for i in range(1, DROP_NAMES + 1)))
    fill = "".join(f"fill{i}.soak.test\n" for i in range(1, 5001))
    a = d / "list-a.txt"
    a.write_text(fill + "".join(f"h{i}.lab.test\n" for i in TOGGLE))
    b = d / "list-b.txt"
    b.write_text(fill)
    rpz = d / "drop.rpz"
    rpz.write_text("$TTL 60\n@ SOA ns.soak.test. hostmaster.soak.test. 1 3600 600 86400 60\n@ NS ns.soak.test.\n"
                   + "".join(f"drop{i}.soak.test CNAME rpz-drop.\n" for i in range(1, DROP_NAMES + 1)))
    return {"queries": q, "drops": drops, "a": a, "b": b, "rpz": rpz}


# ------------------------------------------------------------------ dnsperf

def dnsperf(lab: Lab, qfile: Path, seconds: int, qps: int) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", lab.spec.cli_ns, "dnsperf", "-s", lab.spec.srv_v4,
                             "-d", str(qfile), "-l", str(seconds), "-Q", str(qps), "-t", "2", "-c", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def dnsperf_numbers(text: str) -> dict:
    out = {}
    for key in ("Queries sent", "Queries completed", "Queries lost"):
        m = re.search(rf"{key}:\s+(\d+)", text)
        out[key.split()[1]] = int(m.group(1)) if m else None
    m = re.search(r"Response codes:\s+(.*)", text)
    out["rcodes"] = {}
    if m:
        for name, n in re.findall(r"([A-Z]+) (\d+)", m.group(1)):
            out["rcodes"][name] = int(n)
    m = re.search(r"Queries per second:\s+([\d.]+)", text)
    out["qps"] = float(m.group(1)) if m else None
    return out


# ------------------------------------------------------------------ operations

class Ops:
    """Reload and policy import alternate every `period` seconds (both take the
    lock, so they run one after the other); cache flushes run on their own thread."""

    def __init__(self, lab: Lab, files: dict[str, Path], period: float, flush_period: float):
        self.lab, self.files, self.period, self.flush_period = lab, files, period, flush_period
        self.stop = threading.Event()
        self.stats: dict[str, dict] = {k: {"runs": 0, "failed": 0, "max_s": 0.0, "total_s": 0.0, "errors": []}
                                       for k in ("reload", "policy_import", "cache_flush")}
        self.lock = threading.Lock()

    def _record(self, kind: str, rc: int, err: str, secs: float) -> None:
        with self.lock:
            s = self.stats[kind]
            s["runs"] += 1
            s["total_s"] += secs
            s["max_s"] = max(s["max_s"], secs)
            if rc != 0:
                s["failed"] += 1
                if len(s["errors"]) < 5:
                    s["errors"].append(f"exit {rc}: {err.strip()[-300:]}")

    def main_loop(self) -> None:
        n = 0
        while not self.stop.wait(self.period):
            if n % 2 == 0:
                rc, _, err, secs = self.lab.nexusctl(*self.lab.cfg(), "reload")
                self._record("reload", rc, err, secs)
            else:
                lst = self.files["a"] if (n // 2) % 2 == 0 else self.files["b"]
                rc, _, err, secs = self.lab.nexusctl(*self.lab.cfg(), "policy", "import", str(lst),
                                                     "--format", "domains", "--name", "soak")
                self._record("policy_import", rc, err, secs)
            n += 1

    def flush_loop(self) -> None:
        while not self.stop.wait(self.flush_period):
            rc, _, err, secs = self.lab.nexusctl(*self.lab.cfg(), "cache", "flush")
            self._record("cache_flush", rc, err, secs)


# ------------------------------------------------------------------ samples

def bpftool_json(*args: str):
    p = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True)
    if p.returncode != 0 or not p.stdout.strip():
        return None
    return json.loads(p.stdout)


def meminfo() -> dict[str, int]:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        k, v = line.split(":", 1)
        if k in ("MemAvailable", "Slab", "SUnreclaim", "Percpu"):
            out[k] = int(v.split()[0])
    return out


def inner_policy_maps(pin_root: Path) -> set[int]:
    ids = set()
    for outer in ("nexus_pol_rules", "nexus_pol_bloom", "nexus_pol_prefix"):
        dump = bpftool_json("map", "dump", "pinned", str(pin_root / "maps" / outer)) or []
        for e in dump:
            v = e.get("value")
            if isinstance(v, int):
                ids.add(v)
            elif isinstance(v, list) and v:
                ids.add(int.from_bytes(bytes(int(x, 16) for x in v[:4]), "little"))
    return ids


class Sampler:
    def __init__(self, lab: Lab):
        self.lab = lab
        self.peaks: dict[str, dict] = {}
        self.samples: list[dict] = []
        self.progs_seen: set[int] = set()
        self.maps_seen: set[int] = set()
        self.errors: list[str] = []

    def sample(self) -> dict | None:
        rc, st, err, _ = self.lab.nexusctl(*self.lab.cfg(), "status", timeout=120)
        if rc != 0 or not st:
            self.errors.append(f"status exit {rc}: {err.strip()[-200:]}")
            return None
        prog_ids = {p["id"] for p in st["programs"]}
        map_ids = {m["id"] for m in st["maps"]}
        inner = inner_policy_maps(self.lab.spec.pin_root)
        self.progs_seen |= prog_ids
        self.maps_seen |= map_ids | inner
        mem = 0
        for pid in prog_ids:
            info = bpftool_json("prog", "show", "id", str(pid)) or {}
            mem += info.get("bytes_memlock", 0)
        for mid in map_ids | inner:
            info = bpftool_json("map", "show", "id", str(mid)) or {}
            mem += info.get("bytes_memlock", 0)
        for m in st["maps"]:
            if m["name"] in BOUNDED_MAPS and m.get("entries") is not None:
                pk = self.peaks.setdefault(m["name"], {"max_entries": m["max_entries"], "peak_entries": 0})
                pk["peak_entries"] = max(pk["peak_entries"], m["entries"])
        s = {"t": time.monotonic(), "bpf_bytes": mem, "programs": len(prog_ids), "maps": len(map_ids),
             "policy_inner_maps": len(inner), "live_progs": sorted(prog_ids), "live_maps": sorted(map_ids | inner),
             **meminfo()}
        self.samples.append(s)
        return s


def stats_counters(lab: Lab) -> dict:
    rc, st, err, _ = lab.nexusctl(*lab.cfg(), "maps", "dump", "nexus_counters")
    if rc != 0 or not st:
        raise SystemExit(f"cannot read the counters: {err}")
    out = {}
    for e in st["entries"]:
        k = e["key"]
        name = (k if isinstance(k, str) else str(k)).removeprefix("NEXUS_CNT_").lower()
        v = e["value"]
        out[name] = sum(v) if isinstance(v, list) else v
    return out


def gone(kind: str, ids: set[int], grace: float = 10.0) -> list[int]:
    """Of ids, those still alive in the kernel after a grace period (RCU frees)."""
    deadline = time.monotonic() + grace
    alive = set(ids)
    while alive:
        alive = {i for i in alive if subprocess.run(["bpftool", kind, "show", "id", str(i)],
                                                    capture_output=True).returncode == 0}
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return sorted(alive)


# ------------------------------------------------------------------ main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--qps", type=int, default=1500, help="dnsperf rate (the lab limits a client to 2000/s)")
    ap.add_argument("--period", type=float, default=3.0, help="seconds between reloads/policy imports")
    ap.add_argument("--flush-period", type=float, default=4.0, help="seconds between cache flushes")
    ap.add_argument("--lab-id", default="rsk", help="NEXUS_LAB_ID of the soak's lab (1-4 of a-z0-9)")
    ap.add_argument("--json-out", type=Path, help="also write the report here")
    ap.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("soak: needs root (it brings up a lab)", file=sys.stderr)
        return 3
    for tool in ("dnsperf", "bpftool", "ip"):
        if not shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
            print(f"soak: {tool} is not installed (make setup)", file=sys.stderr)
            return 3

    lab = Lab(args.lab_id)
    seconds = max(10, int(args.minutes * 60))
    warmup = min(WARMUP, seconds / 4)
    work = Path(tempfile.mkdtemp(prefix=f"nexus-soak-{args.lab_id}-"))
    report: dict = {"minutes": round(seconds / 60, 2), "qps": args.qps, "lab_id": args.lab_id}
    failures: list[str] = []
    procs: list[subprocess.Popen] = []
    try:
        files = write_inputs(work)
        log(f"lab up (NEXUS_LAB_ID={args.lab_id})")
        rc, _, err, _ = lab.nexusctl("lab", "up")
        if rc != 0:
            raise SystemExit(f"lab up failed ({rc}): {err}")
        rc, _, err, _ = lab.nexusctl(*lab.cfg(), "policy", "import", str(files["rpz"]), "--format", "rpz",
                                     "--name", "soak-drop")
        if rc != 0:
            raise SystemExit(f"policy import of the drop list failed ({rc}): {err}")
        sampler = Sampler(lab)
        before = stats_counters(lab)
        sampler.sample()
        log(f"dnsperf {args.qps} qps for {seconds} s; reload/import every {args.period} s, "
            f"flush every {args.flush_period} s")
        main_perf = dnsperf(lab, files["queries"], seconds, args.qps)
        drop_perf = dnsperf(lab, files["drops"], seconds, 5)
        procs += [main_perf, drop_perf]
        ops = Ops(lab, files, args.period, args.flush_period)
        threads = [threading.Thread(target=ops.main_loop, daemon=True),
                   threading.Thread(target=ops.flush_loop, daemon=True)]
        for t in threads:
            t.start()
        t_start = time.monotonic()
        baseline = None
        while main_perf.poll() is None:
            time.sleep(SAMPLE_EVERY)
            s = sampler.sample()
            if s and baseline is None and s["t"] - t_start >= warmup:
                baseline = s
                log(f"baseline after {warmup:.0f} s: {s['bpf_bytes']} BPF bytes, {s['programs']} programs, "
                    f"{s['maps']} maps")
        ops.stop.set()
        for t in threads:
            t.join(timeout=600)
        main_out, _ = main_perf.communicate(timeout=60)
        drop_out, _ = drop_perf.communicate(timeout=60)
        end = sampler.sample()
        after = stats_counters(lab)

        d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        perf = dnsperf_numbers(main_out)
        dperf = dnsperf_numbers(drop_out)
        designated = {"rate_limited": d.get("rate_limited", 0) - d.get("rate_limit_slipped", 0),
                      "policy_dropped_at_egress": d.get("policy_dropped", 0),
                      "malformed": d.get("malformed", 0) - d.get("malformed_passed", 0)}
        unexplained = max(0, (perf["lost"] or 0) - sum(designated.values()))
        report["dnsperf"] = perf
        report["designated_drops"] = designated
        report["unexplained_lost"] = unexplained
        report["drop_stream"] = {**dperf, "expected": "every query lost (rpz-drop)"}
        report["kernel"] = {k: d.get(k, 0) for k in ("queries", "answered_in_kernel", "cache_hits", "cache_misses",
                                                      "cache_inserts", "policy_blocked", "blocked", "policy_dropped",
                                                      "rate_limited", "malformed", "tc_responses")}
        report["operations"] = {k: {**v, "total_s": round(v["total_s"], 1), "max_s": round(v["max_s"], 2)}
                                for k, v in ops.stats.items()}
        report["maps"] = {n: {**p, "within_bounds": p["peak_entries"] <= p["max_entries"]}
                          for n, p in sampler.peaks.items()}
        baseline = baseline or (sampler.samples[0] if sampler.samples else None)
        live_progs = set(end["live_progs"]) if end else set()
        live_maps = set(end["live_maps"]) if end else set()
        leaked_progs = gone("prog", sampler.progs_seen - live_progs)
        leaked_maps = gone("map", sampler.maps_seen - live_maps)
        growth = ((end["bpf_bytes"] - baseline["bpf_bytes"]) / baseline["bpf_bytes"]
                  if end and baseline and baseline["bpf_bytes"] else None)
        report["memory"] = {
            "bpf_bytes_after_warmup": baseline and baseline["bpf_bytes"],
            "bpf_bytes_end": end and end["bpf_bytes"],
            "bpf_growth_pct": None if growth is None else round(100 * growth, 2),
            "programs_replaced": len(sampler.progs_seen - live_progs), "programs_leaked": leaked_progs,
            "maps_retired": len(sampler.maps_seen - live_maps), "maps_leaked": leaked_maps,
            "meminfo_kb_after_warmup": baseline and {k: baseline[k] for k in ("Slab", "SUnreclaim", "Percpu",
                                                                              "MemAvailable") if k in baseline},
            "meminfo_kb_end": end and {k: end[k] for k in ("Slab", "SUnreclaim", "Percpu", "MemAvailable")
                                       if k in end},
            "samples": len(sampler.samples),
        }
        report["memory"]["stable"] = (growth is not None and growth <= MEM_GROWTH_LIMIT
                                      and not leaked_progs and not leaked_maps)

        # judgement
        if perf["sent"] is None or perf["sent"] < seconds * args.qps * 0.9:
            failures.append(f"dnsperf sent {perf['sent']} queries, expected about {seconds * args.qps}")
        if unexplained:
            failures.append(f"{unexplained} queries lost beyond the designated drops {designated}")
        if dperf["sent"] and dperf["completed"]:
            failures.append(f"{dperf['completed']} queries for rpz-drop names were answered")
        for k, v in ops.stats.items():
            if v["failed"]:
                failures.append(f"{k}: {v['failed']} of {v['runs']} runs failed: {v['errors']}")
            if v["runs"] == 0:
                failures.append(f"{k} never ran")
        for n, p in report["maps"].items():
            if not p["within_bounds"]:
                failures.append(f"map {n}: {p['peak_entries']} entries > max_entries {p['max_entries']}")
        if set(BOUNDED_MAPS) - set(sampler.peaks):
            failures.append(f"maps never sampled: {sorted(set(BOUNDED_MAPS) - set(sampler.peaks))}")
        if not report["memory"]["stable"]:
            failures.append(f"kernel memory not stable: {report['memory']}")
        if sampler.errors:
            failures.append(f"sampling failed: {sampler.errors[:3]}")
    except (SystemExit, subprocess.TimeoutExpired, OSError) as e:
        failures.append(str(e))
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        if not args.keep:
            log("lab down")
            rc, _, err, _ = lab.nexusctl("lab", "down")
            if rc != 0:
                failures.append(f"lab down failed ({rc}): {err.strip()[-300:]}")
        shutil.rmtree(work, ignore_errors=True)
    report["failures"] = failures
    report["ok"] = not failures
    text = json.dumps(report, indent=1)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    log("OK" if report["ok"] else f"FAILED: {failures}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
