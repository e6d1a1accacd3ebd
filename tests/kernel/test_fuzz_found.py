"""What the packet fuzzer found, each kept as the packets that showed it
(tests/kernel/test_fuzz.py found them; the fixes are in bpf/)."""
from __future__ import annotations

import ipaddress
import struct

import dns.message
import dns.rrset
import pytest

from helpers import dnswire as W
from helpers import fuzz as F
from helpers import packets as P
from helpers import policy_maps
from helpers.bpf import XDP_VERDICTS, apply_config

XDP, TC = F.XDP, F.TC


@pytest.fixture
def pol(dns_objs):
    apply_config(dns_objs)
    policy_maps.install(dns_objs, F.RULES)
    return dns_objs


def xdp(lo, frame):
    res = lo.run(XDP, frame)
    return XDP_VERDICTS[res.retval], res.data_out


def answer_for(query: bytes, records: list[tuple[str, str]]) -> bytes:
    """The resolver's answer to query (its question, as sent), with records [(type, rdata)]."""
    q = W.question_bytes(query)
    qid, = struct.unpack_from("!H", query, 0)
    out = struct.pack("!HHHHHH", qid, 0x8180, 1, len(records), 0, 0) + q
    for rtype, rdata in records:
        out += F.rr_a(rdata) if rtype in ("A", "AAAA") else b""
    return out


def plain_query(name: str, qtype: int = 1, **kw) -> bytes:
    return F.query_wire(0x5151, 0x0100, F.wire_name(F.labels_of(name)), qtype, 1, **kw)


# ---------------------------------------------------------------- 1. the policy was bypassed by odd query shapes

def _shapes(name: str) -> dict[str, bytes]:
    q = plain_query(name)
    src, dst = P.CLIENT4, P.SERVER4
    return {
        "opcode IQUERY": F.plain_frame(F.query_wire(1, 0x0800, F.wire_name(F.labels_of(name)), 1, 1)),
        "trailing bytes": F.plain_frame(q + b"junk"),
        "IPv4 options": F.frame(q, l3=F.L3(4, src, dst, ip_options=b"\x01\x01\x01\x00"), sport=40000, dport=53),
        "IPv6 destination options": F.frame(q, l3=F.L3(6, P.CLIENT6, P.SERVER6, ext=[(60, 0)]), sport=40000,
                                            dport=53),
        "EDNS options past 256 bytes": F.plain_frame(plain_query(name, opt=F.opt_rr(
            1232, options=[(12, bytes(300)), (10, bytes(8))]))),
        "a TSIG-like additional record": F.plain_frame(plain_query(name, counts=(1, 0, 0, 1)) +
                                                       b"\0\x00\xfa\0\xff" + bytes(6)),
    }


@pytest.mark.parametrize("name", ["blocked.test", "x.bad.test", "synth.test"])
def test_resolver_answers_for_blocked_names_never_leave(pol, name):
    """XDP leaves these shapes to the resolver without a policy lookup; before the
    fix TC let the resolver's answer out, so any blocked name resolved."""
    for shape, frame in _shapes(name).items():
        assert xdp(pol, frame)[0] == "XDP_PASS", shape
        ans = answer_for(plain_query(name), [("A", "198.19.200.1")])
        assert pol.run(TC, F.response_frame(ans)).retval == F.TC_SHOT, shape
    c = pol.counters()
    assert c["policy_dropped"] == len(_shapes(name))


def test_allowed_and_unruled_answers_go_out_untouched(pol):
    for name in ("ok.bad.test", "ads.keep.test", "h1.lab.test"):
        frame = F.response_frame(answer_for(plain_query(name), [("A", "198.19.200.1")]))
        res = pol.run(TC, frame)
        assert res.retval == F.TC_OK and res.data_out == frame, name
    assert pol.counters()["policy_dropped"] == 0


# ---------------------------------------------------------------- 2. redirect: checksum at odd offsets, leaks

@pytest.mark.parametrize("name,qtype,rtype,addr", [
    ("redir.test", 1, "A", "198.19.88.8"),            # name of even wire length
    ("a.redir6.test", 28, "AAAA", "2001:db8:88::8"),  # odd: the address data starts at an odd offset
    ("ab.redir6.test", 28, "AAAA", "2001:db8:88::8"),
])
@pytest.mark.parametrize("family", [4, 6])
def test_redirect_rewrite_keeps_the_udp_checksum_right(pol, name, qtype, rtype, addr, family):
    """Before the fix, bpf_l4_csum_replace assumed the address started a 16-bit
    word: after an odd-length name the checksum came out wrong (skbs without
    checksum offload, as BPF_PROG_TEST_RUN makes), and the client dropped the answer."""
    real = "198.19.200.1" if rtype == "A" else "2001:db8:19::200"
    frame = F.response_frame(answer_for(plain_query(name, qtype), [(rtype, real), (rtype, real)]), family)
    res = pol.run(TC, frame)
    assert res.retval == F.TC_OK
    out = F.frame_info(res.data_out)
    assert out.udp_csum_ok and out.udp_csum != 0
    w = W.walk(out.payload)
    assert [out.payload[r.rdata_off:r.end] for r in w.records] == [ipaddress.ip_address(addr).packed] * 2
    assert pol.counters()["policy_redirected"] == 1


def test_redirect_answer_carrying_another_address_is_dropped(pol):
    q = plain_query("redir.test", 255)
    both = answer_for(q, [("A", "198.19.200.1"), ("AAAA", "2001:db8:19::200")])
    many = answer_for(plain_query("redir.test"), [("A", f"198.19.200.{i}") for i in range(1, 71)])
    for frame in (F.response_frame(both), F.response_frame(many)):
        assert pol.run(TC, frame).retval == F.TC_SHOT
    assert pol.counters()["policy_dropped"] == 2
    # 20 records: more than the old walk (17) reached; all rewritten now
    twenty = F.response_frame(answer_for(plain_query("redir.test"), [("A", f"198.19.200.{i}") for i in range(1, 21)]))
    res = pol.run(TC, twenty)
    assert res.retval == F.TC_OK
    w = W.walk(F.frame_info(res.data_out).payload)
    assert {F.frame_info(res.data_out).payload[r.rdata_off:r.end] for r in w.records} == {bytes([198, 19, 88, 8])}


def test_redirect_any_query_is_answered_in_xdp(pol):
    frame = F.plain_frame(plain_query("redir.test", 255))
    verdict, out = xdp(pol, frame)
    assert verdict == "XDP_TX"
    msg = dns.message.from_wire(F.frame_info(out).payload)
    assert [r.to_text() for r in msg.answer[0]] == ["198.19.88.8"]
    assert pol.counters()["policy_redirected"] == 1


# ---------------------------------------------------------------- 3. slip answers to queries with IP options

def test_slip_never_answers_a_query_with_ip_options_or_extension_headers(pol):
    """Before the fix a rate-limited query with IPv4 options (or IPv6 extension
    headers) got a TC=1 answer whose IP header said 20 (40) bytes and whose
    lengths and checksum were wrong."""
    pol.set_config(rl_enabled=1, rl_interval_ns=10**9, rl_burst_ns=10**9, rl_action=1, rl_slip_ratio=1)
    q = plain_query("h1.lab.test")
    odd4 = F.frame(q, l3=F.L3(4, P.CLIENT4, P.SERVER4, ip_options=bytes(40)), sport=40000, dport=53)
    odd6 = F.frame(q, l3=F.L3(6, P.CLIENT6, P.SERVER6, ext=[(0, 0)]), sport=40000, dport=53)
    plain4 = F.plain_frame(q)
    for frame in (odd4, odd6):
        assert xdp(pol, frame)[0] == "XDP_PASS"          # the first query of the client: within its burst
        for _ in range(3):
            assert xdp(pol, frame)[0] == "XDP_DROP"      # limited: dropped, never a broken answer
    verdict, out = xdp(pol, plain4)                      # the same (limited) v4 client
    assert verdict == "XDP_TX"                           # a plain query gets its slip answer
    p = P.parse(out)
    assert p.ip_csum_ok and p.udp_csum_ok and dns.message.from_wire(p.payload).flags & 0x0200
