"""Malformed queries, rate limiting and DGA scoring in the XDP program."""
import struct

import dns.flags
import dns.message
import pytest

from helpers import packets as P
from helpers.bpf import XDP_VERDICTS, apply_config
from nexusctl import dga

XDP = "nexus_dns_xdp"


@pytest.fixture
def lo(dns_objs):
    apply_config(dns_objs)
    return dns_objs


def verdict(lo, frame):
    return XDP_VERDICTS[lo.run(XDP, frame).retval]


def raw_query(payload: bytes, family=4, sport=40000):
    src, dst = (P.CLIENT4, P.SERVER4) if family == 4 else (P.CLIENT6, P.SERVER6)
    return P.build(P.Frame(family, src, dst, sport, 53, payload))


def header(qd=1, an=0, ns=0, ar=0, flags=0x0100, qid=0x1111):
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def qname(*labels: bytes) -> bytes:
    return b"".join(bytes([len(x)]) + x for x in labels) + b"\0"


MALFORMED = {
    "compression pointer in question": header() + b"\x02h1\xc0\x0c" + b"\0\x01\0\x01",
    "label over 63": header() + bytes([64]) + b"a" * 64 + b"\0" + b"\0\x01\0\x01",
    "name over 255": header() + qname(*[b"a" * 63] * 4) + b"\0\x01\0\x01",
    "no terminating zero": header() + b"\x05abcde",
    "qdcount 0": header(qd=0) + qname(b"h1", b"lab", b"test") + b"\0\x01\0\x01",
    "qdcount 2": header(qd=2) + qname(b"h1", b"lab", b"test") + b"\0\x01\0\x01",
    "qdcount 65535": header(qd=65535) + qname(b"h1", b"lab", b"test") + b"\0\x01\0\x01",
    "answers in a query": header(an=1) + qname(b"h1", b"lab", b"test") + b"\0\x01\0\x01",
    "truncated question": header() + qname(b"h1", b"lab", b"test") + b"\0\x01",
    "reserved label type": header() + b"\x42x" + b"\0\x01\0\x01",
    "arcount 1 without a record": header(ar=1) + qname(b"h1", b"lab", b"test") + b"\0\x01\0\x01",
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_queries_are_counted_and_dropped(lo, case):
    assert verdict(lo, raw_query(MALFORMED[case])) == "XDP_DROP"
    c = lo.counters()
    assert c["malformed"] == 1 and c["queries"] == 0


def test_name_of_255_bytes_and_127_labels_is_fine(lo):
    long_name = qname(*[b"a" * 63] * 3, b"b" * 61)            # 3*64 + 62 + 1 = 255
    assert len(long_name) == 255
    assert verdict(lo, raw_query(header() + long_name + b"\0\x01\0\x01")) == "XDP_PASS"
    many = qname(*[b"x"] * 127)                                 # 127*2 + 1 = 255
    assert verdict(lo, raw_query(header() + many + b"\0\x01\0\x01")) == "XDP_PASS"
    c = lo.counters()
    assert c["queries"] == 2 and c["malformed"] == 0


def test_odd_but_legal_queries_go_to_the_resolver(lo):
    notify = header(flags=0x2000) + qname(b"lab", b"test") + b"\0\x06\0\x01"      # opcode NOTIFY
    trailing = header() + qname(b"h1", b"lab", b"test") + b"\0\x01\0\x01" + b"junk"
    tsig = header(ar=1) + qname(b"h1", b"lab", b"test") + b"\0\x01\0\x01" + b"\0\x00\xfa\0\xff" + bytes(6)
    for p in (notify, trailing, tsig):
        assert verdict(lo, raw_query(p)) == "XDP_PASS"
    c = lo.counters()
    assert c["pass_doubt"] == 3 and c["malformed"] == 0


def test_rate_limit_per_client_prefix(lo):
    lo.set_config(rl_enabled=1, rl_interval_ns=10**9, rl_burst_ns=3 * 10**9)   # 1/s, burst 3
    a = [P.query_frame("h1.lab.test", qid=i) for i in range(5)]
    assert [verdict(lo, f) for f in a] == ["XDP_PASS"] * 3 + ["XDP_DROP"] * 2
    # another client is still answered (passed to the resolver here)
    other = P.build(P.Frame(4, "198.18.0.3", P.SERVER4, 40000, 53, P.dns_query("h1.lab.test")))
    assert verdict(lo, other) == "XDP_PASS"
    # IPv6: clients in the same /64 share a bucket
    six = [P.build(P.Frame(6, f"2001:db8:18::{i + 10:x}", P.SERVER6, 40000, 53, P.dns_query("h1.lab.test")))
           for i in range(4)]
    assert [verdict(lo, f) for f in six] == ["XDP_PASS"] * 3 + ["XDP_DROP"]
    assert lo.counters()["rate_limited"] == 3


def test_rate_limit_slip_answers_every_nth_with_tc(lo):
    lo.set_config(rl_enabled=1, rl_interval_ns=10**9, rl_burst_ns=10**9, rl_action=1, rl_slip_ratio=2)
    frames = [P.query_frame("h1.lab.test", qid=100 + i, edns=True) for i in range(5)]
    results = [lo.run(XDP, f) for f in frames]
    assert [XDP_VERDICTS[r.retval] for r in results] == ["XDP_PASS", "XDP_DROP", "XDP_TX", "XDP_DROP", "XDP_TX"]
    p = P.parse(results[2].data_out)
    assert p.udp_csum_ok and p.ip_csum_ok
    msg = dns.message.from_wire(p.payload)
    assert msg.id == 102 and msg.flags & dns.flags.TC and not msg.answer
    assert msg.question[0].name.to_text() == "h1.lab.test."
    c = lo.counters()
    assert c["rate_limited"] == 4 and c["rate_limit_slipped"] == 2


NAMES = ["google.com", "facebook.com", "wikipedia.org", "xjwqkzpvbtqr.com", "a3f9c2e1b7d44e21.net",
         "kd8f7g6h5j4k.info", "bestbuyonline.com", "stackoverflow.com", "qwhrtyxmnbvz.biz",
         "hgfd7s6d5f4g3h2.ru", "x.y.zzzzzzzzzzzzzz.com", "localhost", "mail.microsoftonline.com",
         "UPPERCASEDOMAIN.com", "with-hyphen-name.org", "n1n2n3n4n5n6.io"]


def test_kernel_dga_score_matches_the_reference(lo):
    """count mode: a name is suspicious exactly when the Python reference scores it >= threshold."""
    suspicious = 0
    for i, name in enumerate(NAMES):
        before = lo.counters().get("suspicious", 0)
        assert verdict(lo, P.query_frame(name, qid=i)) == "XDP_PASS"
        flagged = lo.counters()["suspicious"] - before
        want = dga.score_name(name) >= 600
        assert flagged == int(want), (name, dga.score_name(name))
        suspicious += want
    assert suspicious >= 4


@pytest.mark.parametrize("threshold", [100, 300, 500, 700])
def test_dga_threshold_follows_config(lo, threshold):
    lo.set_config(dga_threshold=threshold)
    for i, name in enumerate(NAMES):
        lo.run(XDP, P.query_frame(name, qid=i))
    assert lo.counters()["suspicious"] == sum(dga.score_name(n) >= threshold for n in NAMES)


def test_dga_block_answers_nxdomain(lo):
    lo.set_config(dga_mode=2)
    res = lo.run(XDP, P.query_frame("xjwqkzpvbtqr.com", qid=4242, edns=True))
    assert XDP_VERDICTS[res.retval] == "XDP_TX"
    p = P.parse(res.data_out)
    msg = dns.message.from_wire(p.payload)
    assert msg.rcode() == 3 and msg.id == 4242 and msg.edns == 0 and p.udp_csum_ok
    assert verdict(lo, P.query_frame("wikipedia.org")) == "XDP_PASS"
    c = lo.counters()
    assert c["blocked"] == 1 and c["suspicious"] == 1
