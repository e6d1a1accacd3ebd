"""The XDP and TC programs classify packets correctly (BPF_PROG_TEST_RUN)."""
import struct

import pytest

from helpers import packets as P
from helpers.bpf import XDP_VERDICTS

XDP = "nexus_dns_xdp"
TC = "nexus_dns_tc"


def verdict(lo, frame, prog=XDP):
    return XDP_VERDICTS[lo.run(prog, frame).retval]


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("vlans", [(), ((P.ETH_P_8021Q, 10),), ((P.ETH_P_8021AD, 10), (P.ETH_P_8021Q, 20))])
def test_query_counted_and_passed(dns_objs, family, vlans):
    frame = P.query_frame("h1.lab.test", family=family, vlans=vlans)
    assert verdict(dns_objs, frame) == "XDP_PASS"
    c = dns_objs.counters()
    assert c["packets"] == 1 and c["queries"] == 1 and c["malformed"] == 0


def test_non_dns_udp_and_arp_pass_untouched(dns_objs):
    udp = P.build(P.Frame(4, P.CLIENT4, P.SERVER4, 40000, 8080, b"hello"))
    arp = P.ether(bytes(28), P.ETH_P_ARP)
    for frame in (udp, arp):
        res = dns_objs.run(XDP, frame)
        assert XDP_VERDICTS[res.retval] == "XDP_PASS"
        assert res.data_out == frame
    c = dns_objs.counters()
    assert c["pass_non_dns"] == 2 and c["queries"] == 0


def test_tcp_and_encrypted_dns_counted_by_kind(dns_objs):
    tcp53 = P.ether(P.ipv4(P.CLIENT4, P.SERVER4, P.TCP, struct.pack("!HHIIBBHHH", 40000, 53, 1, 0, 5 << 4, 2,
                                                                      65535, 0, 0)), P.ETH_P_IP)
    dot = P.ether(P.ipv4(P.CLIENT4, P.SERVER4, P.TCP, struct.pack("!HHIIBBHHH", 40000, 853, 1, 0, 5 << 4, 2,
                                                                    65535, 0, 0)), P.ETH_P_IP)
    doq = P.build(P.Frame(6, P.CLIENT6, P.SERVER6, 40000, 853, b"\x00" * 40))
    for f in (tcp53, dot, doq):
        assert verdict(dns_objs, f) == "XDP_PASS"
    c = dns_objs.counters()
    assert c["pass_tcp"] == 1
    assert c["pass_encrypted"] == 2
    assert c["queries"] == 0


def test_response_on_ingress_is_passed(dns_objs):
    q = P.dns_query("h1.lab.test")
    frame = P.response_frame(q, ["198.19.0.1"], sport=53, dport=53)
    assert verdict(dns_objs, frame) == "XDP_PASS"
    assert dns_objs.counters()["pass_response"] == 1


def test_truncated_dns_header_is_malformed_and_dropped(dns_objs):
    frame = P.build(P.Frame(4, P.CLIENT4, P.SERVER4, 40000, 53, b"\x12\x34\x01"))
    assert verdict(dns_objs, frame) == "XDP_DROP"
    c = dns_objs.counters()
    assert c["malformed"] == 1 and c["queries"] == 0


def test_malformed_passed_when_config_says_pass(dns_objs):
    dns_objs.set_config(malformed_action=1)
    frame = P.build(P.Frame(4, P.CLIENT4, P.SERVER4, 40000, 53, b"\x12"))
    assert verdict(dns_objs, frame) == "XDP_PASS"
    c = dns_objs.counters()
    assert c["malformed"] == 1 and c["malformed_passed"] == 1


def test_udp_length_lie_is_malformed(dns_objs):
    q = P.dns_query("h1.lab.test")
    seg = P.udp_segment(P.CLIENT4, P.SERVER4, 40000, 53, q, length=8 + len(q) + 40)
    frame = P.ether(P.ipv4(P.CLIENT4, P.SERVER4, P.UDP, seg), P.ETH_P_IP)
    assert verdict(dns_objs, frame) == "XDP_DROP"
    assert dns_objs.counters()["malformed"] == 1


def test_ipv4_first_fragment_to_dns_is_malformed(dns_objs):
    q = P.dns_query("h1.lab.test")
    seg = P.udp_segment(P.CLIENT4, P.SERVER4, 40000, 53, q)
    frame = P.ether(P.ipv4(P.CLIENT4, P.SERVER4, P.UDP, seg, frag=0x2000), P.ETH_P_IP)
    assert verdict(dns_objs, frame) == "XDP_DROP"
    assert dns_objs.counters()["malformed"] == 1


def test_ipv6_fragment_header_to_dns_is_malformed(dns_objs):
    q = P.dns_query("h1.lab.test")
    seg = P.udp_segment(P.CLIENT6, P.SERVER6, 40000, 53, q)
    frame = P.ether(P.ipv6(P.CLIENT6, P.SERVER6, P.UDP, seg, ext=P.frag_hdr(P.UDP, 0, more=True), first_nh=44),
                    P.ETH_P_IPV6)
    assert verdict(dns_objs, frame) == "XDP_DROP"
    assert dns_objs.counters()["malformed"] == 1


def test_ipv6_extension_headers_are_walked(dns_objs):
    q = P.dns_query("h1.lab.test")
    seg = P.udp_segment(P.CLIENT6, P.SERVER6, 40000, 53, q)
    ext = P.ext_hdr(60, 0) + P.ext_hdr(P.UDP, 1)          # hop-by-hop → dest opts → UDP
    frame = P.ether(P.ipv6(P.CLIENT6, P.SERVER6, P.UDP, seg, ext=ext, first_nh=0), P.ETH_P_IPV6)
    assert verdict(dns_objs, frame) == "XDP_PASS"
    assert dns_objs.counters()["queries"] == 1


def test_ipv4_options_are_skipped(dns_objs):
    q = P.dns_query("h1.lab.test")
    seg = P.udp_segment(P.CLIENT4, P.SERVER4, 40000, 53, q)
    frame = P.ether(P.ipv4(P.CLIENT4, P.SERVER4, P.UDP, seg, options=b"\x01\x01\x01\x00"), P.ETH_P_IP)
    assert verdict(dns_objs, frame) == "XDP_PASS"
    assert dns_objs.counters()["queries"] == 1


def test_configured_dns_port(dns_objs):
    dns_objs.set_config(dns_ports=[5353, 0, 0, 0])
    assert verdict(dns_objs, P.query_frame("h1.lab.test", dport=5353)) == "XDP_PASS"
    assert verdict(dns_objs, P.query_frame("h1.lab.test", dport=53)) == "XDP_PASS"
    c = dns_objs.counters()
    assert c["queries"] == 1 and c["pass_non_dns"] == 1


def test_tc_counts_responses_only(dns_objs):
    q = P.dns_query("h1.lab.test")
    resp = P.response_frame(q, ["198.19.0.1"])
    res = dns_objs.run(TC, resp)
    assert res.retval == 0                      # TC_ACT_OK
    dns_objs.run(TC, P.query_frame("h1.lab.test"))
    c = dns_objs.counters()
    assert c["tc_packets"] == 2 and c["tc_responses"] == 1
