"""nexus_metrics in the kernel: real processes send real datagrams, open real
TCP connections and receive real packets in private network namespaces; the
figures are read back through nexusctl's readers. Counts are checked per
process (its pid) or per namespace, so other activity on the host does not
matter."""
import os
import sys
import time

import pytest

from helpers.metrics import MetricsProbe, Netns, child

DNS_RECEIVERS = """
r4 = receiver(AF_INET, "127.0.0.1", {port})
r6 = receiver(AF_INET6, "::1", {port})
"""


@pytest.fixture
def probe(built, request):
    p = MetricsProbe(request.node.name, getattr(request, "param", ""))
    try:
        p.attach_tracepoints()
        yield p
    finally:
        p.close()


@pytest.fixture
def netns():
    ns = Netns()
    try:
        yield ns
    finally:
        ns.close()


def queries_of(probe, pid):
    return probe.processes().get(pid, {}).get("dns_queries", 0)


# ---------------------------------------------------------------- DNS sends per process

def test_sendto_to_dns_port_counted_both_families(probe, netns):
    out = child(DNS_RECEIVERS.format(port=53) + """
s4 = socket.socket(AF_INET, socket.SOCK_DGRAM)
s6 = socket.socket(AF_INET6, socket.SOCK_DGRAM)
for _ in range(3):
    s4.sendto(b"q", ("127.0.0.1", 53))
for _ in range(2):
    s6.sendto(b"q", ("::1", 53))
done()
""", netns)
    p = probe.processes()[out["pid"]]
    assert p["dns_queries"] == 5
    assert p["comm"] == out["comm"]


def test_udp_to_other_ports_not_counted(probe, netns):
    out = child(DNS_RECEIVERS.format(port=5300) + """
r = receiver(AF_INET, "127.0.0.1", 9999)
s = socket.socket(AF_INET, socket.SOCK_DGRAM)
for _ in range(10):
    s.sendto(b"x", ("127.0.0.1", 9999))
    s.sendto(b"x", ("127.0.0.1", 5300))
c = socket.socket(AF_INET6, socket.SOCK_DGRAM)
c.connect(("::1", 5300))
c.send(b"x")
done()
""", netns)
    assert out["pid"] not in probe.processes()


def test_connected_udp_send_and_sendmsg_counted(probe, netns):
    out = child(DNS_RECEIVERS.format(port=53) + """
c4 = socket.socket(AF_INET, socket.SOCK_DGRAM); c4.connect(("127.0.0.1", 53))
c6 = socket.socket(AF_INET6, socket.SOCK_DGRAM); c6.connect(("::1", 53))
c4.send(b"q")                                   # sendto(fd, ..., NULL, 0)
c6.send(b"q")
c4.sendmsg([b"q"])                              # sendmsg without msg_name
s = socket.socket(AF_INET, socket.SOCK_DGRAM)
s.sendmsg([b"q"], [], 0, ("127.0.0.1", 53))     # sendmsg with msg_name
done()
""", netns)
    assert queries_of(probe, out["pid"]) == 4


def test_sendmmsg_counts_each_dns_message(probe, netns):
    before = probe.host()
    out = child(DNS_RECEIVERS.format(port=53) + """
r = receiver(AF_INET, "127.0.0.1", 9999)
c = socket.socket(AF_INET, socket.SOCK_DGRAM); c.connect(("127.0.0.1", 53))
assert sendmmsg(c, [None, None, None]) == 3                     # connected: all to the peer
u = socket.socket(AF_INET, socket.SOCK_DGRAM)
assert sendmmsg(u, [("127.0.0.1", 53), ("127.0.0.1", 9999), ("127.0.0.1", 53)]) == 3   # own addresses
assert sendmmsg(c, [None] * 10) == 10                           # more than the program reads
done()
""", netns)
    assert queries_of(probe, out["pid"]) == 3 + 2 + 10
    assert probe.host()["mmsg_unread"] - before["mmsg_unread"] >= 2


def test_dig_counted_under_its_own_name(probe, netns):
    """dig sends from a thread named isc-net-0000, with sendmmsg on a connected socket."""
    import subprocess
    srv = subprocess.Popen(["ip", "netns", "exec", netns.name, sys.executable, "-c",
                            "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM);"
                            "s.bind(('127.0.0.1', 53)); print('ready', flush=True); s.recvfrom(512); s.recvfrom(512)"],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        pids = []
        for _ in range(2):
            d = subprocess.Popen(["ip", "netns", "exec", netns.name, "dig", "@127.0.0.1", "+time=1", "+tries=1",
                                  "h1.lab.test"], stdout=subprocess.DEVNULL)
            d.wait(timeout=20)
            pids.append(d.pid)
    finally:
        srv.kill()
        srv.wait()
    procs = probe.processes()
    for pid in pids:
        assert procs[pid]["comm"] == "dig"
        assert procs[pid]["dns_queries"] >= 1


def test_process_named_after_main_thread_not_sending_thread(probe, netns):
    out = child(DNS_RECEIVERS.format(port=53) + """
def work():
    libc.prctl(15, b"dnsworker", 0, 0, 0)       # PR_SET_NAME: this thread's comm
    socket.socket(AF_INET, socket.SOCK_DGRAM).sendto(b"q", ("127.0.0.1", 53))
t = threading.Thread(target=work); t.start(); t.join()
done()
""", netns)
    p = probe.processes()[out["pid"]]
    assert p["dns_queries"] == 1
    assert p["comm"] == out["comm"] != "dnsworker"


def test_failed_send_not_counted_but_reported(probe, netns):
    before = probe.host()["dns_send_errors"]
    out = child("""
s = socket.socket(AF_INET, socket.SOCK_DGRAM)
try:
    s.sendto(b"q", ("198.18.99.1", 53))         # no route in this namespace
    raise SystemExit("sent?")
except OSError as e:
    assert e.errno == 101, e                    # ENETUNREACH
done()
""", netns)
    assert out["pid"] not in probe.processes()
    assert probe.host()["dns_send_errors"] > before


def test_tcp_to_port_53_is_not_a_udp_query(probe, netns):
    out = child("""
l = receiver(AF_INET, "127.0.0.1", 53, socket.SOCK_STREAM)
c = socket.create_connection(("127.0.0.1", 53))
a, _ = l.accept()
c.send(b"\\x00\\x01q")
c.sendto(b"q", ("127.0.0.1", 53))               # an address on a TCP socket is ignored
done()
""", netns)
    assert out["pid"] not in probe.processes()


@pytest.mark.parametrize("probe", ["dns: {ports: [5353]}\n"], indirect=True)
def test_configured_dns_ports_are_the_ones_counted(probe, netns):
    out = child(DNS_RECEIVERS.format(port=53) + """
r = receiver(AF_INET, "127.0.0.1", 5353)
s = socket.socket(AF_INET, socket.SOCK_DGRAM)
s.sendto(b"q", ("127.0.0.1", 53))
s.sendto(b"q", ("127.0.0.1", 5353))
s.sendto(b"q", ("127.0.0.1", 5353))
done()
""", netns)
    assert queries_of(probe, out["pid"]) == 2


# ---------------------------------------------------------------- interfaces

def _lo_of(probe, netns):
    rows = [i for i in probe.interfaces() if i["netns_ino"] == netns.inode]
    return rows[0] if rows else None


def test_netif_counts_packets_and_frame_bytes(probe, netns):
    n, size = 20, 100
    child(f"""
r = receiver(AF_INET, "127.0.0.1", 7777)
s = socket.socket(AF_INET, socket.SOCK_DGRAM)
for _ in range({n}):
    s.sendto(b"x" * {size}, ("127.0.0.1", 7777))
    r.recvfrom(2048)
done()
""", netns)
    lo = _lo_of(probe, netns)
    assert lo is not None and lo["name"] == "lo" and lo["netns"] == netns.name
    assert lo["rx_packets"] == n
    assert lo["rx_bytes"] == n * (size + 8 + 20 + 14)       # UDP + IPv4 + Ethernet headers


@pytest.mark.parametrize("probe", ["metrics: {interfaces: [veth-none]}\n"], indirect=True)
def test_netif_filter_keeps_other_interfaces_out(probe, netns):
    before = probe.host()["netif_filtered"]
    child("""
r = receiver(AF_INET, "127.0.0.1", 7777)
s = socket.socket(AF_INET, socket.SOCK_DGRAM)
for _ in range(5):
    s.sendto(b"x", ("127.0.0.1", 7777))
done()
""", netns)
    assert _lo_of(probe, netns) is None
    assert probe.host()["netif_filtered"] - before >= 5


# ---------------------------------------------------------------- TLS connections

def test_tls_connections_counted_for_the_connecting_process(probe, netns):
    out = child("""
l4 = receiver(AF_INET, "127.0.0.1", 443, socket.SOCK_STREAM)
l6 = receiver(AF_INET6, "::1", 443, socket.SOCK_STREAM)
lo = receiver(AF_INET, "127.0.0.1", 8443, socket.SOCK_STREAM)
keep = []
for addr, port, l in [("127.0.0.1", 443, l4)] * 3 + [("::1", 443, l6)] + [("127.0.0.1", 8443, lo)] * 2:
    keep.append(socket.create_connection((addr, port)))
    keep.append(l.accept()[0])
try:
    socket.create_connection(("127.0.0.1", 444))   # refused: never established
except ConnectionRefusedError:
    pass
done()
""", netns)
    p = probe.processes()[out["pid"]]
    assert p["tls_connections"] == 4
    assert p["comm"] == out["comm"]


# ---------------------------------------------------------------- CPU sampling

def _burn(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sum(range(1000))


def test_cpu_clock_samples_and_attribution(built, request):
    from nexusctl.ops import stats as ops_stats
    p = MetricsProbe(request.node.name)
    try:
        # one range covering every address: each sample must land "in" it
        layout = p.lo.btf.struct("nexus_prog_ranges")
        with p.lo.map("nexus_prog_rng") as m:
            m.update(b"\0" * 4, layout.pack({"count": 1, "r": [{"start": 0, "end": 2 ** 64 - 1, "prog_id": 7}]}))
        p.attach_sampling("cpu_clock", freq=1000)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            _burn(0.2)
            ev = ops_stats.read_cpu(p.app)["events"][0]
            if ev["samples"] >= 10:
                break
        p.detach()
        ev = next(e for e in ops_stats.read_cpu(p.app)["events"] if e["event"] == "cpu_clock")
        assert ev["available"] is True
        assert ev["samples"] >= 10
        assert ev["in_nexus"] == ev["samples"]
        assert ev["programs"] == {"prog id 7": ev["samples"]}
    finally:
        p.close()


def test_prog_ranges_are_the_jit_images_of_pinned_programs(built, request):
    from nexusctl.engine.actions import Ctx
    from nexusctl.engine.state import State
    from nexusctl.features.metrics import WriteProgRanges
    from nexusctl.tools import libbpf as L
    p = MetricsProbe(request.node.name)
    try:
        p.pin_programs()
        ctx = Ctx(runner=p.app.runner, config=p.cfg, state=State.load(p.pin_dir / "nostate"))
        act = WriteProgRanges(p.pin_dir, built / "nexus_metrics.o")
        assert not act.satisfied(ctx)
        act.apply(ctx)
        assert act.satisfied(ctx)
        with p.lo.map("nexus_prog_rng") as m:
            r = p.lo.btf.struct("nexus_prog_ranges").unpack(m.lookup(b"\0" * 4))
        ids = {}
        for pin in (p.pin_dir / "progs").iterdir():
            fd = L.obj_get(str(pin))
            ids[L.prog_info(fd)["id"]] = pin.name
            os.close(fd)
        got = r["r"][: r["count"]]
        assert {x["prog_id"] for x in got} == set(ids)
        assert all(0 < x["start"] < x["end"] for x in got)
    finally:
        p.close()


def test_hardware_events_reported_not_failed(built):
    from nexusctl.app import App
    from nexusctl.features import metrics
    from nexusctl.tools import perf
    rows = {r["event"]: r for r in metrics.probe_perf_events()}
    assert rows["cpu_clock"]["available"] is True
    for ev in metrics.perf_events():
        ok, _ = perf.perf_event_available(ev.type, ev.config)
        assert rows[ev.name]["available"] is ok
        assert ok or rows[ev.name]["reason"]
    checks = {c["name"]: c for c in metrics.doctor_checks(App(json=True))}
    for name, r in rows.items():
        c = checks[f"perf event {name}"]
        assert c["ok"] is r["available"] and c["required"] is False
        assert ("unavailable" in c["detail"]) is (not r["available"])


def test_samples_attributed_to_the_xdp_program_they_hit(built, request):
    """The real path: JIT ranges written by WriteProgRanges, cpu-clock sampling,
    and the XDP program run in the kernel (BPF_PROG_TEST_RUN, many repeats)."""
    from pathlib import Path

    from helpers import packets as P
    from helpers.bpf import Loaded, private_pin_dir
    from nexusctl.app import App
    from nexusctl.config import load_config_text
    from nexusctl.engine.actions import Ctx
    from nexusctl.engine.state import State
    from nexusctl.features import metrics as feature
    from nexusctl.ops import stats as ops_stats
    from nexusctl.tools import libbpf as L
    from nexusctl.tools import perf
    pin = private_pin_dir(request.node.name)
    lo = Loaded(["nexus_dns_xdp", "nexus_dns_tc", "nexus_metrics"], pin)
    links = []
    try:
        (pin / "progs").mkdir()
        for obj in lo.objs.values():
            for name, _ in obj.programs():
                obj.pin_program(name, str(pin / "progs" / name))
        app = App(json=True)
        app.config = load_config_text(f"pin_root: {pin}\n")
        ctx = Ctx(runner=app.runner, config=app.config, state=State.load(pin / "nostate"))
        feature.WriteProgRanges(pin, Path(built) / "nexus_metrics.o").apply(ctx)
        ev = feature.perf_events()[0]
        for cpu in feature.online_cpus():
            fd = perf.open_counter(ev.type, ev.config, cpu, freq=2000)
            try:
                links.append(perf.link_create(lo.prog_fd(ev.prog), fd, perf.BPF_PERF_EVENT))
            finally:
                os.close(fd)
        frame = P.query_frame("h1.lab.test")
        hits = {}
        for _ in range(20):                     # bounded: ~0.1 s of XDP runs each
            L.prog_test_run(lo.prog_fd("nexus_dns_xdp"), frame, repeat=1_000_000)
            hits = next(e for e in ops_stats.read_cpu(app)["events"] if e["event"] == "cpu_clock")["programs"]
            if hits.get("nexus_dns_xdp"):
                break
        assert hits.get("nexus_dns_xdp", 0) > 0
        assert set(hits) <= {"nexus_dns_xdp", "nexus_dns_tc"} | set(feature.PROGRAMS)
    finally:
        for fd in links:
            os.close(fd)
        lo.close()
