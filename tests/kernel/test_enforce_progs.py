"""The enforcer's cgroup programs in the kernel: loaded with private pins,
attached (unpinned links) to a private cgroup, and judged by real sockets of
real processes sending from a private network namespace to a veth
interface. Both families; unconnected UDP (sendmsg), connected UDP and TCP
(connect); ports 53, 853 and others; CIDR allow lists; audit; nested cgroups;
per-process, per-cgroup and per-CPU counts; ring-buffer events."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from helpers.bpf import Loaded, private_pin_dir
from helpers.enforce import case, cgroup2_root, probe, remove_cgroup
from nexusctl.features import enforce as feat
from nexusctl.tools import libbpf as L
from nexusctl.tools import perf
from nexusctl.tools.ringbuf import RingBuffer

V4_OK, V4_BAD, V4_NET = "198.18.99.1", "198.18.99.2", "198.18.99.0/24"
V6_OK, V6_BAD, V6_NET = "2001:db8:99::1", "2001:db8:99::2", "2001:db8:99::/64"


class Enforcer:
    def __init__(self, lo: Loaded, cg: Path, netns: str):
        self.lo, self.cg, self.netns = lo, cg, netns
        self.btf = lo.btf
        self.links: list[int] = []

    def attach(self, cg: Path) -> None:
        fd = os.open(cg, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for hook, prog in feat.CG_PROGS.items():
                self.links.append(perf.link_create(self.lo.prog_fd(prog), fd, perf.CGROUP_ATTACH_TYPES[hook]))
        finally:
            os.close(fd)

    def set_policy(self, cg: Path, index: int, allow: list[str], ports=(53, 853), mode: str = "enforce") -> None:
        pol, key = self.btf.struct("nexus_enf_policy"), self.btf.struct("nexus_enf_key")
        with self.lo.map(feat.ALLOW_MAP) as a:
            for net in allow:
                a.update(key.pack(feat.allow_key(net, index)), b"\x01")
        with self.lo.map(feat.POLICY_MAP) as p:
            p.update(os.stat(cg).st_ino.to_bytes(8, "little"),
                     pol.pack({"index": index, "mode": feat.MODES[mode], "ports": list(ports)}))

    def counters(self) -> dict[str, int]:
        names = {v: n.removeprefix("NEXUS_ENF_CNT_").lower() for n, v in self.btf.enum("nexus_enf_counter").items()}
        with self.lo.map(feat.COUNTERS_MAP) as m:
            return {names[int.from_bytes(k, "little")]: sum(int.from_bytes(v, "little") for v in vals)
                    for k, vals in m.items()}

    def cg_stats(self, index: int) -> dict[str, int]:
        layout = self.btf.struct("nexus_enf_cg_stats")
        with self.lo.map(feat.CG_STATS_MAP) as m:
            out: dict[str, int] = {}
            for v in m.lookup(index.to_bytes(4, "little")):
                for f, n in layout.unpack(v).items():
                    out[f] = out.get(f, 0) + n
            return out

    def proc_denied(self, pid: int) -> int | None:
        layout = self.btf.struct("nexus_proc_stats")
        with self.lo.map("nexus_procs") as m:
            v = m.lookup(pid.to_bytes(4, "little"))
        return None if v is None else layout.unpack(v)["dns_denied"]

    def events(self) -> list[dict]:
        layout = self.btf.struct("nexus_enf_event")
        out = []
        fd = L.obj_get(str(self.lo.pin_dir / "maps" / feat.EVENTS_MAP))
        try:
            with RingBuffer(fd, lambda raw: out.append(layout.unpack(raw))) as rb:
                rb.consume()
        finally:
            os.close(fd)
        return out

    def close(self) -> None:
        for fd in self.links:
            os.close(fd)            # an unpinned link detaches when its last fd closes
        self.links.clear()


@pytest.fixture
def enf(built, request):
    tag = f"{os.getpid()}-{abs(hash(request.node.name)) % 10000}"
    cg = cgroup2_root() / f"nexus-ktest-enf-{tag}"
    netns = f"nxenf-k{tag}"
    lo = None
    e = None
    try:
        cg.mkdir()
        (cg / "inner").mkdir()
        subprocess.run(["ip", "netns", "add", netns], check=True)
        # a veth pair with both ends in the namespace: somewhere to send to (no dummy driver here)
        for argv in (["link", "add", "nxenf0", "type", "veth", "peer", "name", "nxenf1"],
                     ["link", "set", "lo", "up"], ["link", "set", "nxenf0", "up"], ["link", "set", "nxenf1", "up"], ["addr", "add", "198.18.99.100/24", "dev", "nxenf0"],
                     ["addr", "add", "2001:db8:99::100/64", "dev", "nxenf0", "nodad"]):
            subprocess.run(["ip", "-n", netns, *argv], check=True)
        lo = Loaded([feat.CG_OBJECT], private_pin_dir(request.node.name))
        e = Enforcer(lo, cg, netns)
        e.attach(cg)
        yield e
    finally:
        if e is not None:
            e.close()
        if lo is not None:
            lo.close()
        remove_cgroup(cg)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)


MATRIX = [  # (kind, address, port, verdict in enforce mode)
    ("udp", V4_OK, 53, "ok"), ("udp", V4_BAD, 53, "EPERM"),
    ("cudp", V4_OK, 53, "ok"), ("cudp", V4_BAD, 53, "EPERM"),
    ("tcp", V4_OK, 53, "ok"), ("tcp", V4_BAD, 53, "EPERM"),
    ("tcp", V4_OK, 853, "ok"), ("tcp", V4_BAD, 853, "EPERM"), ("udp", V4_BAD, 853, "EPERM"),
    ("udp", V4_BAD, 5353, "ok"), ("tcp", V4_BAD, 443, "ok"),
    ("udp", V6_OK, 53, "ok"), ("udp", V6_BAD, 53, "EPERM"),
    ("cudp", V6_OK, 53, "ok"), ("cudp", V6_BAD, 53, "EPERM"),
    ("tcp", V6_OK, 53, "ok"), ("tcp", V6_BAD, 53, "EPERM"),
    ("tcp", V6_OK, 853, "ok"), ("tcp", V6_BAD, 853, "EPERM"), ("udp", V6_BAD, 853, "EPERM"),
    ("udp", V6_BAD, 5353, "ok"),
]


def test_enforce_matrix_inside_and_outside_the_cgroup(enf):
    enf.set_policy(enf.cg, 0, [V4_OK, V6_OK])
    cases = [case(k, a, p) for k, a, p, _ in MATRIX]
    inside = probe(enf.cg, enf.netns, cases)
    assert dict(zip(map(str, MATRIX), inside["results"])) == {str(m): m[3] for m in MATRIX}
    denied = sum(1 for m in MATRIX if m[3] == "EPERM")
    dns = sum(1 for m in MATRIX if m[2] in (53, 853))
    c = enf.counters()
    assert c["denied"] == denied and c["audited"] == 0
    assert c["allowed"] == dns - denied
    assert c["not_dns"] == len(MATRIX) - dns
    assert enf.proc_denied(inside["pid"]) == denied
    assert enf.cg_stats(0) == {"checked": dns, "allowed": dns - denied, "denied": denied, "audited": 0}

    # a process outside the cgroup, same network namespace: untouched, and not even seen
    before = enf.counters()["checked"]
    outside = probe(None, enf.netns, cases)
    assert outside["results"] == ["ok"] * len(MATRIX)
    assert enf.counters()["checked"] == before


def test_descendant_cgroup_is_covered(enf):
    enf.set_policy(enf.cg, 0, [V4_OK])
    r = probe(enf.cg / "inner", enf.netns, [case("udp", V4_OK), case("udp", V4_BAD), case("tcp", V6_OK)])
    assert r["results"] == ["ok", "EPERM", "EPERM"]


def test_nested_configured_cgroup_uses_its_own_policy_and_counts_once(enf):
    enf.set_policy(enf.cg, 0, [V4_OK])
    enf.set_policy(enf.cg / "inner", 1, ["198.18.99.3"])
    inner = probe(enf.cg / "inner", enf.netns, [case("udp", "198.18.99.3"), case("udp", V4_OK)])
    outer = probe(enf.cg, enf.netns, [case("udp", "198.18.99.3"), case("udp", V4_OK)])
    assert inner["results"] == ["ok", "EPERM"]
    assert outer["results"] == ["EPERM", "ok"]
    assert enf.counters()["denied"] == 2
    assert enf.cg_stats(1)["denied"] == 1 and enf.cg_stats(0)["denied"] == 1


def test_cidr_allow_lists(enf):
    enf.set_policy(enf.cg, 0, ["198.18.99.0/28", "2001:db8:99::/120"])
    r = probe(enf.cg, enf.netns, [case("udp", "198.18.99.5"), case("udp", "198.18.99.20"),
                                  case("udp", "2001:db8:99::ff"), case("udp", "2001:db8:99::1:1")])
    assert r["results"] == ["ok", "EPERM", "ok", "EPERM"]


def test_empty_allow_list_refuses_all_dns(enf):
    enf.set_policy(enf.cg, 0, [])
    r = probe(enf.cg, enf.netns, [case("udp", V4_OK), case("tcp", V6_OK, 853), case("udp", V4_OK, 123)])
    assert r["results"] == ["EPERM", "EPERM", "ok"]


def test_configured_ports_replace_the_defaults(enf):
    enf.set_policy(enf.cg, 0, [V4_OK], ports=(5353,))
    r = probe(enf.cg, enf.netns, [case("udp", V4_BAD, 53), case("udp", V4_BAD, 5353), case("udp", V4_OK, 5353)])
    assert r["results"] == ["ok", "EPERM", "ok"]


def test_audit_lets_through_counts_and_reports(enf):
    enf.set_policy(enf.cg, 0, [V4_OK], mode="audit")
    r = probe(enf.cg, enf.netns, [case("udp", V4_BAD), case("tcp", V6_BAD, 853), case("udp", V4_OK)])
    assert r["results"] == ["ok", "ok", "ok"]
    c = enf.counters()
    assert (c["audited"], c["denied"], c["allowed"]) == (2, 0, 1)
    assert enf.proc_denied(r["pid"]) == 2
    evs = enf.events()
    assert [e["verdict"] for e in evs] == [2, 2]           # NEXUS_ENF_AUDITED


def test_events_carry_pid_comm_destination(enf):
    enf.set_policy(enf.cg, 0, [V4_OK])
    r = probe(enf.cg, enf.netns, [case("udp", V4_BAD), case("tcp", V6_BAD, 853), case("cudp", V4_BAD)])
    evs = enf.events()
    assert len(evs) == 3
    hooks = {v: n for n, v in enf.btf.enum("nexus_enf_hook").items()}
    got = []
    for e in evs:
        addr = b"".join(w.to_bytes(4, "little") for w in e["addr"])
        got.append((hooks[e["hook"]], e["family"], addr, e["port"], e["protocol"]))
        assert e["pid"] == r["pid"] and e["comm"].rstrip(b"\0").decode() == r["comm"]
        assert e["thread_comm"].rstrip(b"\0").decode() == r["comm"]      # single-threaded probe
        assert e["cgroup_id"] == os.stat(enf.cg).st_ino and e["verdict"] == 1 and e["policy"] == 0
    import ipaddress
    assert got == [
        ("NEXUS_ENF_HOOK_SENDMSG4", 4, b"\0" * 10 + b"\xff\xff" + ipaddress.ip_address(V4_BAD).packed, 53, 17),
        ("NEXUS_ENF_HOOK_CONNECT6", 6, ipaddress.ip_address(V6_BAD).packed, 853, 6),
        ("NEXUS_ENF_HOOK_CONNECT4", 4, b"\0" * 10 + b"\xff\xff" + ipaddress.ip_address(V4_BAD).packed, 53, 17),
    ]
    assert enf.events() == []           # consumed


def test_attached_cgroup_without_policy_is_out_of_scope(enf):
    r = probe(enf.cg, enf.netns, [case("udp", V4_BAD)])
    assert r["results"] == ["ok"]
    c = enf.counters()
    assert c["out_of_scope"] == 1 and c["denied"] == 0
