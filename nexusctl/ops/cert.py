"""cert watch (the agent), cert events, cert verify, ct logs.

The agent consumes the cert_events ring buffer (nexus_cert.c), puts each
chain back together (records of one thread and one outermost SSL_* call,
closed by an END record), judges it with nexusctl.certs.analyze, writes the
verdict to the pinned maps (cert_threat_cache and ct_log_entries by SHA-256,
cert_verdicts by the in-kernel key that kill mode looks up) and appends the
event to the events file that `cert events` reads.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from nexusctl.certs import analyze, ct
from nexusctl.engine.objects import pin_dirs
from nexusctl.errors import OperationFailed, Unsupported, UsageError
from nexusctl.tools.btf import Layout, kernel_btf

EVENTS_MAP = "cert_events"
EVENT_STRUCT = "nexus_cert_event"           # in the BTF of the loaded programs
D2I_PROG = "cert_d2i"
COUNTERS_MAP = "cert_counters"
CONFIG_MAP = "cert_config"
VERDICT_MAPS = ("cert_threat_cache", "cert_verdicts", "ct_log_entries")
CHAIN_TIMEOUT_S = 2.0                       # a chain whose END never came (process killed) is judged anyway
RELOAD_CHECK_S = 1.0                        # trust store / revocations / log list changed?
PIN_CHECK_S = 2.0                           # still the same ring buffer?
GC_INTERVAL_S = 60.0                        # forget threads and SNIs of processes that are gone
DER_CACHE = 4096                            # certificates kept to resolve reference records
SUMMARY_EVENTS = 1000                       # events kept for the --json summary

EV_CERT, EV_REF, EV_END = 1, 2, 3           # enum nexus_cert_event_type (checked against BTF at start)
VERDICT_NAMES = {"unknown": "NEXUS_CERT_UNKNOWN", "allow": "NEXUS_CERT_ALLOW", "warn": "NEXUS_CERT_WARN",
                 "block": "NEXUS_CERT_BLOCK"}


# ---------------------------------------------------------------- the in-kernel key

MASK64 = (1 << 64) - 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & MASK64


def kernel_key(der: bytes, der_len: int, k0: int, k1: int) -> int:
    """The key nexus_cert.c computes (cert_helpers.h): SipHash-2-4 rounds over the
    DER in little-endian words (last one zero-padded), then one word
    (len(der) << 32 | der_len), then SipHash finalization."""
    v = [k0 ^ 0x736f6d6570736575, k1 ^ 0x646f72616e646f6d, k0 ^ 0x6c7967656e657261, k1 ^ 0x7465646279746573]

    def rnd():
        v[0] = (v[0] + v[1]) & MASK64; v[1] = _rotl(v[1], 13); v[1] ^= v[0]; v[0] = _rotl(v[0], 32)  # noqa: E702
        v[2] = (v[2] + v[3]) & MASK64; v[3] = _rotl(v[3], 16); v[3] ^= v[2]                          # noqa: E702
        v[0] = (v[0] + v[3]) & MASK64; v[3] = _rotl(v[3], 21); v[3] ^= v[0]                          # noqa: E702
        v[2] = (v[2] + v[1]) & MASK64; v[1] = _rotl(v[1], 17); v[1] ^= v[2]; v[2] = _rotl(v[2], 32)  # noqa: E702

    def word(m):
        v[3] ^= m
        rnd()
        rnd()
        v[0] ^= m

    padded = der + b"\0" * (-len(der) % 8)
    for i in range(0, len(padded), 8):
        word(int.from_bytes(padded[i:i + 8], "little"))
    word((len(der) << 32) | der_len)
    v[2] ^= 0xFF
    for _ in range(4):
        rnd()
    return v[0] ^ v[1] ^ v[2] ^ v[3]


# ---------------------------------------------------------------- helpers

def _maps_dir(app) -> Path:
    return pin_dirs(app.config.pin_root)["maps"]


def events_path(cfg) -> Path:
    return cfg.cert.events_file or (Path(cfg.state_dir) / "cert-events.jsonl")


def make_analyzer(cfg, log_list: Path | None = None, trust_store: Path | None = None) -> analyze.Analyzer:
    try:
        return analyze.Analyzer(analyze.Settings.from_config(cfg, log_list=log_list, trust_store=trust_store))
    except (analyze.CertFileError, ct.LogListError) as e:
        raise UsageError(str(e), "fix the file or the config key that names it (cert.trust_store, "
                                 "cert.revocation, ct.log_list)") from None


def _wall(ktime_ns: int) -> float:
    """CLOCK_MONOTONIC (bpf_ktime_get_ns) to unix time."""
    return time.time() - (time.monotonic_ns() - ktime_ns) / 1e9


def _cstr(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode(errors="replace")


def _enum(btf, name: str, prefix: str) -> dict[str, int]:
    return {k.removeprefix(prefix): v for k, v in btf.enum(name).items()}


@dataclass
class Record:
    type: int
    pid: int
    tid: int
    chain_id: int
    index: int
    key: int
    der_len: int
    flags: int
    verdict: int
    comm: str
    sni: str
    time_ns: int
    der: bytes = b""


@dataclass
class Chain:
    first_seen: float
    records: list[Record] = field(default_factory=list)


# ---------------------------------------------------------------- the agent

class Agent:
    """One instance per `cert watch`. step() handles what the ring buffer holds
    (waiting up to timeout_ms); run() loops until stopped."""

    def __init__(self, app, on_event: Callable[[dict], None] | None = None, pids: set[int] | None = None):
        self.app = app
        self.pids = None if pids is None else set(pids)     # judge only these processes
        self.cfg = app.config
        self.on_event = on_event
        self.analyzer = make_analyzer(self.cfg)
        self.L = app.runner.libbpf
        self.pending: dict[tuple[int, int], Chain] = {}
        self.ders: OrderedDict[int, bytes] = OrderedDict()
        self.events: list[dict] = []
        self.stats = {"records": 0, "chains": 0, "events": 0, "repeats": 0, "unresolved": 0, "maps_written": 0,
                      "ignored": 0}
        self.stop = False
        self.events_file = events_path(self.cfg)
        self._lines = self._count_lines()
        self._last = {"reload": 0.0, "pin": 0.0, "gc": time.monotonic()}
        self.handles: dict[str, object] = {}
        self.rb = None
        self._open()

    # ------------------------------------------------------------ kernel side

    def _open(self) -> None:
        maps = _maps_dir(self.app)
        pin = maps / EVENTS_MAP
        if not pin.exists():
            raise OperationFailed(f"the certificate observer is not up ({pin} is not pinned)",
                                  "set cert.enabled: true in the config and run `nexusctl up`")
        try:
            for name in (EVENTS_MAP, COUNTERS_MAP, CONFIG_MAP, "cert_recent", "cert_threads", "cert_sni",
                         *VERDICT_MAPS):
                self.handles[name] = self.L.MapHandle.pinned(str(maps / name))
        except OSError as e:
            self.close()
            if e.errno in (errno.EPERM, errno.EACCES):
                raise Unsupported("reading the certificate observer's maps: permission denied",
                                  "run `nexusctl cert watch` as root") from None
            raise OperationFailed(f"opening the certificate observer's maps: {e}",
                                  "run `nexusctl up` again") from None
        self.map_id = self.handles[EVENTS_MAP].info["id"]
        # The record layout as the loaded program has it (a rebuilt object may differ).
        prog = pin_dirs(self.cfg.pin_root)["progs"] / D2I_PROG
        try:
            fd = self.L.obj_get(str(prog))
            try:
                btf = kernel_btf(self.L.prog_info(fd)["btf_id"])
            finally:
                os.close(fd)
        except OSError as e:
            self.close()
            raise OperationFailed(f"reading {prog}: {e}", "run `nexusctl up` again") from None
        self.btf = btf
        self.event_layout = btf.struct(EVENT_STRUCT)
        members = {m[0]: m[2] // 8 for m in self.event_layout.type.extra}
        self.der_off = members["der"]
        types = _enum(btf, "nexus_cert_event_type", "NEXUS_CERT_EV_")
        if (types.get("CERT"), types.get("REF"), types.get("END")) != (EV_CERT, EV_REF, EV_END):
            raise OperationFailed("nexus_cert.o does not match this nexusctl (event types differ)",
                                  "run `nexusctl build && nexusctl reload`")
        self.ev_flags = _enum(btf, "nexus_cert_event_flag", "NEXUS_CERT_EVF_")
        self.flag_bits = _enum(btf, "nexus_cert_flag", "NEXUS_CERT_F_")
        kinds = btf.enum("nexus_cert_verdict_kind")
        self.verdict_values = {k: kinds[v] for k, v in VERDICT_NAMES.items()}
        self.verdict_by_value = {v: k for k, v in self.verdict_values.items()}
        self.layouts = {}
        for name in (*VERDICT_MAPS, CONFIG_MAP):
            info = self.handles[name].info
            self.layouts[name] = Layout(kernel_btf(info["btf_id"]), info["btf_value_type_id"])
        # Certificates this process sent earlier would now come as references we
        # cannot resolve: make every process send the DER again once.
        self._clear(self.handles["cert_recent"])
        from nexusctl.tools.ringbuf import RingBuffer
        self._records: list[bytes] = []
        self.rb = RingBuffer(self.handles[EVENTS_MAP].fd, self._records.append)

    @staticmethod
    def _clear(handle) -> None:
        for k in list(handle.keys()):
            handle.delete(k)

    def close(self) -> None:
        if self.rb is not None:
            self.rb.close()
            self.rb = None
        for h in self.handles.values():
            h.close()
        self.handles = {}

    def enforce_mode(self) -> str:
        """ct.enforce as the kernel has it now (`up`/`apply` may have changed it since the start)."""
        raw = self.handles[CONFIG_MAP].lookup(b"\0" * 4)
        value = int(self.layouts[CONFIG_MAP].unpack(raw)["enforce"]) if raw else 0
        modes = {v: k.removeprefix("NEXUS_CERT_").lower() for k, v in self.btf.enum("nexus_cert_enforce").items()}
        return modes.get(value, str(value))

    def counters(self) -> dict[str, int]:
        h = self.handles.get(COUNTERS_MAP)
        if h is None:
            return {}
        names = {v: k.lower() for k, v in _enum(self.btf, "nexus_cert_counter", "NEXUS_CERT_CNT_").items()
                 if not k.startswith("_")}
        return {names[int.from_bytes(k, "little")]: sum(int.from_bytes(v, "little") for v in vals)
                for k, vals in h.items() if int.from_bytes(k, "little") in names}

    # ------------------------------------------------------------ records

    def decode(self, raw: bytes) -> Record:
        head = raw[:self.der_off]
        f = self.event_layout.unpack(head.ljust(self.event_layout.size, b"\0"))
        copied = f["copied"]
        return Record(f["type"], f["pid"], f["tid"], f["chain_id"], f["index"], f["key"], f["der_len"], f["flags"],
                      int(f["verdict"]), _cstr(f["comm"]), _cstr(f["sni"]), f["time_ns"],
                      raw[self.der_off:self.der_off + copied])

    def handle(self, raw: bytes) -> None:
        self.stats["records"] += 1
        r = self.decode(raw)
        if self.pids is not None and r.pid not in self.pids:
            self.stats["ignored"] += 1
            return
        chain_key = (r.tid, r.chain_id)
        if r.type == EV_END:
            chain = self.pending.pop(chain_key, None)
            if chain:
                self._judge(chain)
            return
        if r.type == EV_CERT and r.der and not (r.flags & self.ev_flags["TRUNCATED"]):
            self.ders[r.key] = r.der
            self.ders.move_to_end(r.key)
            while len(self.ders) > DER_CACHE:
                self.ders.popitem(last=False)
        elif r.type == EV_REF:
            r.der = self.ders.get(r.key, b"")
            if r.der:
                self.ders.move_to_end(r.key)
        self.pending.setdefault(chain_key, Chain(time.monotonic())).records.append(r)

    def _judge(self, chain: Chain) -> None:
        self.stats["chains"] += 1
        recs = sorted(chain.records, key=lambda x: x.index)
        leaf = recs[0]
        if leaf.index != 0:
            return                      # the leaf's record was lost (counted as dropped in the kernel)
        if leaf.type == EV_REF:
            self.stats["repeats"] += 1  # judged when this process first sent it
            return
        when = datetime.fromtimestamp(_wall(leaf.time_ns), timezone.utc)
        base = {"time": ct.iso(when), "pid": leaf.pid, "tid": leaf.tid, "comm": leaf.comm,
                "sni": leaf.sni or None}
        killed = bool(leaf.flags & self.ev_flags["KILLED"])
        if not leaf.der:
            why = ("the DER could not be read (EFAULT)" if leaf.flags & self.ev_flags["EFAULT"]
                   else "the certificate was seen before this agent started")
            self.stats["unresolved"] += 1
            ev = {**base, "sha256": None, "subject": None, "issuer": None, "not_before": None, "not_after": None,
                  "flags": [], "threat_level": 0, "scts": {"embedded": 0, "valid": 0}, "verdict": "unknown",
                  "error": why}
        elif leaf.flags & self.ev_flags["TRUNCATED"]:
            ev = {**base, "sha256": None, "subject": None, "issuer": None, "not_before": None, "not_after": None,
                  "flags": [], "threat_level": 0, "scts": {"embedded": 0, "valid": 0}, "verdict": "unknown",
                  "error": f"only {len(leaf.der)} of {leaf.der_len} DER bytes were captured; raise cert.max_der"}
        else:
            ders = [leaf.der] + [x.der for x in recs[1:] if x.der]
            res = self.analyzer.analyze(ders, leaf.sni or None, when)
            self._write_maps(res, leaf.key)
            ev = {**base, **analyze.public_view(res)}
        ev.update({"kernel_key": f"{leaf.key:016x}", "der_len": leaf.der_len, "chain_length": len(recs),
                   "kernel_verdict": self.verdict_by_value.get(leaf.verdict, "unknown"), "killed": killed,
                   "enforce": self.enforce_mode()})
        self._record_event(ev)

    def _write_maps(self, res: dict, key: int) -> None:
        fp = bytes.fromhex(res["sha256"])
        flags = 0
        for f in res["flags"]:
            flags |= self.flag_bits.get(f, 0)
        verdict = {"sha256": fp, "key": key, "judged_at": int(time.time()), "flags": flags,
                   "threat_level": res["threat_level"], "verdict": self.verdict_values[res["verdict"]]}
        packed = self.layouts["cert_threat_cache"].pack(verdict)
        self.handles["cert_threat_cache"].update(fp, packed)
        self.handles["cert_verdicts"].update(key.to_bytes(8, "little"), self.layouts["cert_verdicts"].pack(verdict))
        s = res["scts"]
        lay = self.layouts["ct_log_entries"]
        n_logs, prefix = _array_dims(lay, "logs")
        status = {"embedded": min(s["embedded"], 255), "valid": min(s["valid"], 255),
                  "invalid": min(s["invalid"], 255), "unknown": min(s["unknown"], 255),
                  "unusable": min(s["unusable"], 255), "operators": min(s["operators"], 255),
                  "compliant": 1 if s["compliant"] else 0, "earliest_ms": res.get("_earliest_ms", 0),
                  "logs": [lid[:prefix] for lid in res.get("_valid_log_ids", [])[:n_logs]]}
        self.handles["ct_log_entries"].update(fp, lay.pack(status))
        self.stats["maps_written"] += 1

    def _record_event(self, ev: dict) -> None:
        self.stats["events"] += 1
        self.events.append(ev)
        del self.events[:-SUMMARY_EVENTS]
        self._append(ev)
        if self.on_event:
            self.on_event(ev)

    # ------------------------------------------------------------ the events file

    def _count_lines(self) -> int:
        try:
            with open(self.events_file, "rb") as f:
                return sum(1 for _ in f)
        except FileNotFoundError:
            return 0

    def _append(self, ev: dict) -> None:
        p = self.events_file
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "a") as f:
            f.write(json.dumps(ev, default=str) + "\n")
        self._lines += 1
        keep = self.cfg.cert.events_keep
        if self._lines > 2 * keep:
            lines = p.read_text().splitlines(keepends=True)[-keep:]
            tmp = p.with_name(p.name + ".tmp")
            tmp.write_text("".join(lines))
            os.replace(tmp, p)
            self._lines = len(lines)

    # ------------------------------------------------------------ the loop

    def flush(self, force: bool = False) -> None:
        now = time.monotonic()
        for k in [k for k, c in self.pending.items() if force or now - c.first_seen > CHAIN_TIMEOUT_S]:
            self._judge(self.pending.pop(k))

    def _take(self) -> list[bytes]:
        recs, self._records[:] = list(self._records), []
        return recs

    def step(self, timeout_ms: int = 250) -> int:
        self.rb.poll(timeout_ms)
        recs = self._take()
        for raw in recs:
            self.handle(raw)
        self.flush()
        self._housekeeping()
        return len(recs)

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last["reload"] > RELOAD_CHECK_S:
            self._last["reload"] = now
            try:
                self.analyzer.reload()
            except (analyze.CertFileError, ct.LogListError) as e:
                self.app.warn(f"keeping the previous files: {e}")
                self.analyzer._stamps = self.analyzer._current_stamps()
        if now - self._last["pin"] > PIN_CHECK_S:
            self._last["pin"] = now
            self._check_pin()
        if now - self._last["gc"] > GC_INTERVAL_S:
            self._last["gc"] = now
            self.gc()

    def _check_pin(self) -> None:
        pin = _maps_dir(self.app) / EVENTS_MAP
        try:
            fd = self.L.obj_get(str(pin))
        except OSError:
            raise OperationFailed(f"{pin} is gone: the certificate observer was taken down",
                                  "run `nexusctl up`, then start `nexusctl cert watch` again") from None
        try:
            same = self.L.map_info(fd)["id"] == self.map_id
        finally:
            os.close(fd)
        if not same:                    # down + up: new maps, reopen
            self.flush(force=True)
            self.close()
            self._open()

    def gc(self) -> int:
        """Remove thread and SNI entries of processes that no longer exist."""
        removed = 0
        for name, tgid_of in (("cert_threads", lambda k: int.from_bytes(k, "little") >> 32),
                              ("cert_sni", lambda k: int.from_bytes(k[8:12], "little"))):
            h = self.handles[name]
            for k in list(h.keys(limit=1_000_000)):
                if not os.path.exists(f"/proc/{tgid_of(k)}"):
                    removed += h.delete(k)
        return removed

    def run(self, max_events: int | None = None, duration: float | None = None) -> None:
        end = time.monotonic() + duration if duration else None
        while not self.stop:
            self.step(250)
            if max_events is not None and self.stats["events"] >= max_events:
                break
            if end is not None and time.monotonic() >= end:
                break
        # what is already in the ring buffer belongs to this run
        self.rb.consume()
        for raw in self._take():
            self.handle(raw)
        self.flush(force=True)


def _array_dims(layout: Layout, name: str) -> tuple[int, int]:
    """(outer, inner) element counts of a 2-D array member of a struct."""
    btf = layout.btf
    mt = next(m[1] for m in layout.type.extra if m[0] == name)
    outer = btf.resolve(mt)
    inner = btf.resolve(outer.extra[0])
    return outer.extra[2], inner.extra[2]


def watch(app, max_events: int | None = None, duration: float | None = None,
          on_event: Callable[[dict], None] | None = None, pids: set[int] | None = None) -> dict:
    agent = Agent(app, on_event, pids)
    for w in agent.analyzer.warnings:
        app.warn(w)
    previous = signal.getsignal(signal.SIGTERM)

    def _term(signum, frame):
        agent.stop = True

    signal.signal(signal.SIGTERM, _term)
    t0 = time.monotonic()
    try:
        agent.run(max_events, duration)
    except KeyboardInterrupt:
        agent.flush(force=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        counters = agent.counters()
        agent.close()
    return {"changed": agent.stats["maps_written"] > 0, "duration_s": round(time.monotonic() - t0, 3),
            "stats": agent.stats, "counters": counters, "events": agent.events,
            "events_file": str(agent.events_file)}


# ---------------------------------------------------------------- the other commands

def events(app, limit: int = 100, pid: int | None = None, sha256: str | None = None,
           verdict: str | None = None) -> list[dict]:
    p = events_path(app.config)
    try:
        lines = p.read_text().splitlines()
    except FileNotFoundError:
        return []
    except PermissionError:
        raise Unsupported(f"{p}: permission denied", "run as root") from None
    out = []
    for line in reversed(lines):
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        if pid is not None and ev.get("pid") != pid:
            continue
        if sha256 and (ev.get("sha256") or "") != sha256.lower().replace(":", ""):
            continue
        if verdict and ev.get("verdict") != verdict:
            continue
        out.append(ev)
        if len(out) >= limit:
            break
    out.reverse()
    return out


def verify(app, files: list[Path], sni: str | None = None, log_list: Path | None = None,
           trust_store: Path | None = None, at: datetime | None = None) -> dict:
    """Judge a PEM/DER file (leaf first, then its chain; more files add to the chain). No kernel, no root."""
    ders: list[bytes] = []
    for f in files:
        try:
            ders += analyze.read_certificates(f)
        except analyze.CertFileError as e:
            raise UsageError(str(e)) from None
    if not ders:
        raise UsageError(f"{files[0]}: no certificate")
    a = make_analyzer(app.config, log_list=log_list, trust_store=trust_store)
    for w in a.warnings:
        app.warn(w)
    res = analyze.public_view(a.analyze(ders, sni, at))
    res["time"] = ct.iso(at or datetime.now(timezone.utc))
    res["file"] = str(files[0])
    res["pid"] = res["comm"] = None
    return res


def ct_logs(app, log_list: Path | None = None) -> dict:
    path = log_list or app.config.ct.log_list
    if path is None:
        raise UsageError("no CT log list: ct.log_list is not set", "set ct.log_list in the config, or pass --log-list")
    try:
        ll = ct.LogList.load(path)
    except ct.LogListError as e:
        raise UsageError(str(e)) from None
    for w in ll.warnings:
        app.warn(w)
    return {"log_list": str(path), "version": ll.version, "log_list_timestamp": ll.timestamp,
            "operators": ll.operators, "logs": [log.to_json() for log in ll.logs.values()]}
