"""The DNS fast path on real packets in the lab: answers from the kernel,
answers with the resolver gone, malformed floods, per-client rate limits."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import yaml

from helpers.cli import dig, nexusctl, run_in_netns
from integration.conftest import labcfg


def stats(lab):
    r = nexusctl("--json", *labcfg(lab), "stats")
    assert r.rc == 0, r.stderr
    return r.json


def test_second_query_is_answered_in_the_kernel(lab):
    for server, qtype, name, want in ((lab.srv_v4, "A", "h42.lab.test", "198.19.0.42"),
                                      (lab.srv_v6, "AAAA", "h43.lab.test", "2001:db8:19::2b")):
        first = dig(lab.cli_ns, server, name, qtype, "+short")
        assert first.stdout.strip() == want
        before = stats(lab)["dns"]["answered_in_kernel"]
        second = dig(lab.cli_ns, server, name.upper(), qtype)
        assert second.returncode == 0
        assert want in second.stdout
        assert name.upper() in second.stdout          # the question's case is echoed
        assert stats(lab)["dns"]["answered_in_kernel"] == before + 1
    r = nexusctl("--json", *labcfg(lab), "cache", "list")
    names = {(e["name"], e["qtype"]) for e in r.json["entries"]}
    assert ("h42.lab.test.", "A") in names and ("h43.lab.test.", "AAAA") in names


def test_cached_names_answer_after_the_resolver_stops(lab):
    assert dig(lab.cli_ns, lab.srv_v4, "h77.lab.test", "A", "+short").stdout.strip() == "198.19.0.77"
    pid = int(lab.unbound_pid.read_text())
    os.kill(pid, signal.SIGTERM)
    try:
        for _ in range(50):
            try:
                os.kill(pid, 0)
                time.sleep(0.1)
            except ProcessLookupError:
                break
        r = dig(lab.cli_ns, lab.srv_v4, "h77.lab.test", "A", "+short")
        assert r.stdout.strip() == "198.19.0.77"
        r = dig(lab.cli_ns, lab.srv_v4, "h78.lab.test", "A", "+short")
        assert "198.19.0.78" not in r.stdout          # not cached: nobody answers
        assert "refused" in r.stdout or "timed out" in r.stdout
    finally:
        assert nexusctl("lab", "up").rc == 0          # brings the resolver back


def test_cache_flush_sends_queries_back_to_the_resolver(lab):
    dig(lab.cli_ns, lab.srv_v4, "h90.lab.test", "A", "+short")
    r = nexusctl("--json", *labcfg(lab), "cache", "flush", "h90.lab.test")
    assert r.rc == 0 and r.json["removed"] >= 1
    names = {e["name"] for e in nexusctl("--json", *labcfg(lab), "cache", "list").json["entries"]}
    assert "h90.lab.test." not in names
    before = stats(lab)["dns"]["answered_in_kernel"]
    assert dig(lab.cli_ns, lab.srv_v4, "h90.lab.test", "A", "+short").stdout.strip() == "198.19.0.90"
    assert stats(lab)["dns"]["answered_in_kernel"] == before


SENDER = textwrap.dedent("""
    import socket, struct, sys
    src, dst, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    kind = sys.argv[4]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    s.settimeout(0.002)
    got = 0
    for i in range(count):
        if kind == "malformed":
            pkt = struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 0) + b"\\x02h1\\xc0\\x0c\\x00\\x01\\x00\\x01"
        else:
            name = b"".join(bytes([len(x)]) + x for x in (b"f%d" % i, b"lab", b"test")) + b"\\0"
            pkt = struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 0) + name + b"\\x00\\x01\\x00\\x01"
        s.sendto(pkt, (dst, 53))
        try:
            while True:
                s.recv(2048)
                got += 1
        except OSError:
            pass
    print(got)
""")


def send(lab, src, count, kind):
    r = run_in_netns(lab.cli_ns, [sys.executable, "-c", SENDER, src, lab.srv_v4, str(count), kind], timeout=60)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.strip())


def test_malformed_from_a_client_is_counted_and_the_resolver_keeps_working(lab):
    before = stats(lab)["dns"]["malformed"]
    assert send(lab, lab.cli_v4, 200, "malformed") == 0       # dropped: nothing comes back
    assert stats(lab)["dns"]["malformed"] - before == 200
    assert dig(lab.cli_ns, lab.srv_v4, "h3.lab.test", "A", "+short").stdout.strip() == "198.19.0.3"


def test_a_flood_is_limited_while_another_client_is_answered(lab, tmp_path):
    cfg = yaml.safe_load(lab.config_path.read_text())
    cfg["dns"]["rate_limit"].update({"rate": 20, "burst": 20})
    tight = tmp_path / "tight.yaml"
    tight.write_text(yaml.safe_dump(cfg))
    other = "198.18.0.3"
    subprocess.run(["ip", "-n", lab.cli_ns, "addr", "add", f"{other}/24", "dev", lab.cli_if], check=True)
    try:
        assert nexusctl("-c", str(tight), "up").rc == 0
        before = stats(lab)["dns"]["rate_limited"]
        answered = send(lab, lab.cli_v4, 300, "flood")
        limited = stats(lab)["dns"]["rate_limited"] - before
        assert limited >= 200                                   # burst 20, then 20/s
        assert answered <= 300 - limited
        r = dig(lab.cli_ns, lab.srv_v4, "h5.lab.test", "A", "+short", "-b", other)
        assert r.stdout.strip() == "198.19.0.5"
    finally:
        subprocess.run(["ip", "-n", lab.cli_ns, "addr", "del", f"{other}/24", "dev", lab.cli_if])
        assert nexusctl(*labcfg(lab), "up").rc == 0
