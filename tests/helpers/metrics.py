"""nexus_metrics loaded with private pins and attached through unpinned links
(closing the link fd detaches), plus helpers to run small client programs in
private network namespaces and read the figures back through nexusctl's own
readers (nexusctl.ops.stats)."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

from helpers.bpf import Loaded, private_pin_dir
from nexusctl.app import App
from nexusctl.config import load_config_text
from nexusctl.features import metrics as feature
from nexusctl.ops import stats as ops_stats
from nexusctl.tools import libbpf as L
from nexusctl.tools import perf

_ns_counter = itertools.count()


class MetricsProbe:
    def __init__(self, tag: str, config_yaml: str = ""):
        self.pin_dir = private_pin_dir("m-" + tag)
        self.config_yaml = config_yaml
        self.cfg = load_config_text(f"pin_root: {self.pin_dir}\n{config_yaml}")
        self.lo = Loaded(["nexus_metrics"], self.pin_dir)
        self.links: list[int] = []
        self.app = App(json=True)
        self.app.config = self.cfg
        self.configure()

    # ---- setup
    def configure(self, **overrides) -> None:
        values = {**feature.config_values(self.cfg), **overrides}
        layout = self.lo.btf.struct("nexus_metrics_config")
        with self.lo.map("nexus_mconfig") as m:
            m.update(b"\0" * 4, layout.pack(values))

    def attach_tracepoints(self) -> None:
        perf.tracefs()
        for _, prog, cat, tp in feature.TRACEPOINTS:
            self._link(prog, perf.open_tracepoint(cat, tp))

    def attach_sampling(self, event: str = "cpu_clock", freq: int = 1000) -> None:
        ev = next(e for e in feature.perf_events() if e.name == event)
        for cpu in feature.online_cpus():
            self._link(ev.prog, perf.open_counter(ev.type, ev.config, cpu, freq=freq))

    def _link(self, prog: str, target_fd: int) -> None:
        try:
            self.links.append(perf.link_create(self.lo.prog_fd(prog), target_fd, perf.BPF_PERF_EVENT))
        finally:
            os.close(target_fd)

    def detach(self) -> None:
        for fd in self.links:
            os.close(fd)
        self.links.clear()

    def pin_programs(self) -> None:
        progs = self.pin_dir / "progs"
        progs.mkdir(exist_ok=True)
        obj = self.lo.objs["nexus_metrics"]
        for name, _ in obj.programs():
            obj.pin_program(name, str(progs / name))

    def close(self) -> None:
        self.detach()
        self.lo.close()

    # ---- reading, through nexusctl's readers
    def processes(self) -> dict[int, dict]:
        return {p["pid"]: p for p in ops_stats.read_processes(self.app)}

    def host(self) -> dict[str, int]:
        return ops_stats.read_host_counters(self.app)

    def interfaces(self) -> list[dict]:
        return ops_stats.read_interfaces(self.app)


class Netns:
    """A private network namespace with lo up; removed by close()."""

    def __init__(self):
        self.name = f"nxm-{os.getpid()}-{next(_ns_counter)}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)

    @property
    def inode(self) -> int:
        return os.stat(f"/run/netns/{self.name}").st_ino

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)


CHILD_PRELUDE = r"""
import ctypes, json, os, socket, struct, sys, threading
AF_INET, AF_INET6 = socket.AF_INET, socket.AF_INET6

def receiver(family, addr, port, kind=socket.SOCK_DGRAM):
    s = socket.socket(family, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    if kind == socket.SOCK_STREAM:
        s.listen(16)
    return s

libc = ctypes.CDLL(None, use_errno=True)

class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(iovec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]

class mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint)]

def sockaddr_in(addr, port):
    return struct.pack("=H", AF_INET) + struct.pack("!H", port) + socket.inet_aton(addr) + bytes(8)

def sendmmsg(sock, dests, payload=b"q"):
    # dests: list of (addr, port) or None (the connected peer)
    n = len(dests)
    vec = (mmsghdr * n)()
    keep = []
    buf = ctypes.create_string_buffer(payload, len(payload))
    for i, d in enumerate(dests):
        io = iovec(ctypes.cast(buf, ctypes.c_void_p), len(payload))
        keep.append(io)
        vec[i].hdr.iov = ctypes.pointer(io)
        vec[i].hdr.iovlen = 1
        if d is not None:
            sa = ctypes.create_string_buffer(sockaddr_in(*d), 16)
            keep.append(sa)
            vec[i].hdr.name = ctypes.cast(sa, ctypes.c_void_p)
            vec[i].hdr.namelen = 16
    r = libc.sendmmsg(sock.fileno(), vec, n, 0)
    if r < 0:
        raise OSError(ctypes.get_errno(), "sendmmsg")
    return r

def done(**extra):
    print(json.dumps({"pid": os.getpid(), "comm": open("/proc/self/comm").read().strip(), **extra}))
"""


def child(code: str, netns: Netns | None = None, timeout: float = 30) -> dict:
    """Run a Python snippet (CHILD_PRELUDE first; it must call done()) and return
    what it printed: its pid and comm, and anything it added."""
    argv = [sys.executable, "-c", CHILD_PRELUDE + code]
    if netns:
        argv = ["ip", "netns", "exec", netns.name, *argv]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def pinned_links_of(prog_ids: set[int]) -> list[dict]:
    """Live BPF links of the given programs (bpftool link list)."""
    out = subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
    return [lk for lk in json.loads(out or "[]") if lk.get("prog_id") in prog_ids]


def prog_ids(pin_root: Path) -> set[int]:
    ids = set()
    for pin in (pin_root / "progs").iterdir():
        fd = L.obj_get(str(pin))
        try:
            ids.add(L.prog_info(fd)["id"])
        finally:
            os.close(fd)
    return ids
