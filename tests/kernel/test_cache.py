"""The answer cache: filled at TC egress from the resolver's answers, served
at XDP ingress with XDP_TX. Output packets are checked byte for byte."""
import struct

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from helpers import packets as P
from helpers.bpf import XDP_VERDICTS, apply_config

XDP, TC = "nexus_dns_xdp", "nexus_dns_tc"
NS = 1_000_000_000


@pytest.fixture
def lo(dns_objs):
    apply_config(dns_objs)
    return dns_objs


def fill(lo, name="h1.lab.test", qtype="A", answers=("198.19.0.1",), family=4, ttl=300, **kw):
    q = P.dns_query(name, qtype, **kw)
    resp = P.response_frame(q, list(answers), family=family, ttl=ttl)
    assert lo.run(TC, resp).retval == 0
    return q, resp


def ask(lo, frame):
    res = lo.run(XDP, frame)
    return XDP_VERDICTS[res.retval], res.data_out


def entries(lo):
    klay = lo.btf.struct("nexus_cache_key")
    vlay = lo.btf.struct("nexus_cache_val")
    with lo.map("nexus_cache") as m:
        return [(klay.unpack(k), vlay.unpack(v)) for k, v in m.items()]


def edit_entry(lo, fn):
    klay = lo.btf.struct("nexus_cache_key")
    vlay = lo.btf.struct("nexus_cache_val")
    with lo.map("nexus_cache") as m:
        for k, v in list(m.items()):
            val = vlay.unpack(v)
            fn(val)
            m.update(k, vlay.pack(val))


def expected_answer(query_wire: bytes, answers, qtype="A", ttl=300, flags=None) -> bytes:
    q = dns.message.from_wire(query_wire)
    r = dns.message.make_response(q)
    if answers:
        r.answer.append(dns.rrset.from_text(q.question[0].name, ttl, "IN", qtype, *answers))
    if q.edns >= 0:
        r.use_edns(0, ednsflags=q.ednsflags & dns.flags.DO, payload=1232)
    if flags is not None:
        r.flags = flags
    return r.to_wire()


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("vlans", [(), ((P.ETH_P_8021Q, 100),)])
@pytest.mark.parametrize("edns", [False, True])
def test_hit_is_answered_in_place_byte_for_byte(lo, family, vlans, edns):
    fill(lo, family=family, edns=edns)
    qname = "H1.lAb.TeSt"            # 0x20 mixed case: the answer echoes it
    frame = P.query_frame(qname, family=family, vlans=vlans, qid=0xBEEF, sport=40001, edns=edns)
    verdict, out = ask(lo, frame)
    assert verdict == "XDP_TX"
    p = P.parse(out)
    q = P.parse(frame)
    # L2/L3/L4 turned around, VLAN tags kept
    assert (p.eth_src, p.eth_dst) == (P.SERVER_MAC, P.CLIENT_MAC)
    assert p.vlans == list(vlans)
    assert (p.src, p.dst) == (q.dst, q.src)
    assert (p.sport, p.dport) == (53, 40001)
    assert p.ttl == 64
    assert p.ip_csum_ok and p.udp_csum_ok and p.udp_csum != 0
    assert p.udp_len == 8 + len(p.payload)
    assert p.ip_total_len == len(p.ip_header) + p.udp_len
    # DNS: ID, flags, question bytes as sent, the cached record, OPT iff asked
    qwire = P.dns_query(qname, edns=edns, qid=0xBEEF)
    assert p.payload == expected_answer(qwire, ["198.19.0.1"])
    msg = dns.message.from_wire(p.payload)
    assert msg.id == 0xBEEF and msg.question[0].name.to_text() == "H1.lAb.TeSt."
    assert (msg.edns >= 0) == edns
    c = lo.counters()
    assert c["cache_hits"] == 1 and c["answered_in_kernel"] == 1 and c["cache_inserts"] == 1


def test_ttl_ages_and_entry_expires(lo):
    fill(lo, ttl=300)
    edit_entry(lo, lambda v: v.update(inserted_ns=v["inserted_ns"] - 100 * NS))
    verdict, out = ask(lo, P.query_frame("h1.lab.test"))
    assert verdict == "XDP_TX"
    msg = dns.message.from_wire(P.parse(out).payload)
    assert msg.answer[0].ttl == 200
    assert P.parse(out).udp_csum_ok
    # past its expiry: removed, and the query goes to the resolver untouched
    edit_entry(lo, lambda v: v.update(expires_ns=1))
    frame = P.query_frame("h1.lab.test")
    verdict, out = ask(lo, frame)
    assert verdict == "XDP_PASS" and out == frame
    assert lo.counters()["cache_expired"] == 1
    assert entries(lo) == []


def test_several_records_and_sections(lo):
    def more(r):
        r.authority.append(dns.rrset.from_text("lab.test.", 600, "IN", "NS", "ns.lab.test."))
        r.additional.append(dns.rrset.from_text("ns.lab.test.", 120, "IN", "A", "198.18.0.1"))
    q = P.dns_query("multi.lab.test", edns=True)
    resp = P.response_frame(q, ["198.19.10.1", "198.19.10.2", "198.19.10.3"], mutate=more)
    assert lo.run(TC, resp).retval == 0
    (key, val), = entries(lo)
    assert (val["ancount"], val["nscount"], val["arcount"], val["n_ttl"]) == (3, 1, 1, 5)
    # the entry expires with its shortest TTL
    assert val["expires_ns"] - val["inserted_ns"] == 120 * NS
    verdict, out = ask(lo, P.query_frame("MULTI.lab.test", edns=True, qid=7))
    assert verdict == "XDP_TX"
    p = P.parse(out)
    assert p.udp_csum_ok
    msg = dns.message.from_wire(p.payload)
    assert sorted(r.to_text() for r in msg.answer[0]) == ["198.19.10.1", "198.19.10.2", "198.19.10.3"]
    assert msg.authority[0][0].to_text() == "ns.lab.test."
    assert msg.additional[0][0].to_text() == "198.18.0.1"
    assert msg.edns == 0


def test_nxdomain_is_cached_with_its_soa(lo):
    def soa(r):
        r.authority.append(dns.rrset.from_text("lab.test.", 300, "IN", "SOA",
                                               "ns.lab.test. hostmaster.lab.test. 1 3600 600 86400 300"))
    q = P.dns_query("nope.lab.test")
    assert lo.run(TC, P.response_frame(q, [], rcode=dns.rcode.NXDOMAIN, mutate=soa)).retval == 0
    verdict, out = ask(lo, P.query_frame("nope.lab.test", qid=9))
    assert verdict == "XDP_TX"
    msg = dns.message.from_wire(P.parse(out).payload)
    assert msg.rcode() == dns.rcode.NXDOMAIN and msg.authority[0].rdtype == dns.rdatatype.SOA


def test_do_bit_and_qtype_are_part_of_the_key(lo):
    fill(lo, edns=True, do=False)
    assert ask(lo, P.query_frame("h1.lab.test", do=True))[0] == "XDP_PASS"
    assert ask(lo, P.query_frame("h1.lab.test", "AAAA"))[0] == "XDP_PASS"
    assert ask(lo, P.query_frame("h1.lab.test", edns=True))[0] == "XDP_TX"


def test_answer_too_big_for_a_plain_client_goes_to_the_resolver(lo):
    many = [f"198.19.1.{i}" for i in range(1, 31)]                # 30 A records: > 512 bytes
    fill(lo, "big.lab.test", answers=many, edns=True)
    assert entries(lo) == []                                     # 30 records > NEXUS_CACHE_MAX_RR
    fill(lo, "mid.lab.test", answers=[f"198.19.2.{i}" for i in range(1, 15)], edns=True)
    assert len(entries(lo)) == 1
    # 14 records fit in the cache; a client without EDNS (512 bytes) still gets the resolver
    plain = P.query_frame("mid.lab.test")
    assert ask(lo, plain)[0] == "XDP_TX" or len(dns.message.from_wire(
        P.parse(ask(lo, plain)[1]).payload).to_wire()) <= 512


def test_ecs_never_cached_nor_served(lo):
    # a query with ECS: its answer is not cached, even when the resolver does not echo ECS
    assert ask(lo, P.query_frame("h1.lab.test", ecs="198.18.7.0/24", qid=77))[0] == "XDP_PASS"
    q = P.dns_query("h1.lab.test", ecs="198.18.7.0/24", qid=77)
    assert lo.run(TC, P.response_frame(q, ["198.19.0.1"])).retval == 0
    assert entries(lo) == []

    # an answer carrying ECS is not cached either
    def echo_ecs(r):
        r.use_edns(0, payload=1232, options=[dns.edns.ECSOption.from_text("198.18.7.0/24/24")])
    q = P.dns_query("h1.lab.test", edns=True, qid=78)
    assert lo.run(TC, P.response_frame(q, ["198.19.0.1"], mutate=echo_ecs)).retval == 0
    assert entries(lo) == []
    assert lo.counters()["cache_skipped"] == 2
    # and a cached name is not served to an ECS query
    fill(lo)
    assert ask(lo, P.query_frame("h1.lab.test", ecs="198.18.7.0/24"))[0] == "XDP_PASS"


def test_servfail_and_truncated_are_not_cached(lo):
    q = P.dns_query("h1.lab.test")
    lo.run(TC, P.response_frame(q, [], rcode=dns.rcode.SERVFAIL))

    def tc(r):
        r.flags |= dns.flags.TC
    lo.run(TC, P.response_frame(q, ["198.19.0.1"], mutate=tc))
    assert entries(lo) == []
    assert lo.counters()["cache_skipped"] == 2


def test_cache_off_in_config(lo):
    lo.set_config(cache_enabled=0)
    fill(lo)
    assert entries(lo) == []
    assert ask(lo, P.query_frame("h1.lab.test"))[0] == "XDP_PASS"


def test_latency_is_measured_on_both_paths(lo):
    lay = lo.btf.struct("nexus_latency")

    def lat(path):
        with lo.map("nexus_latency") as m:
            vals = [lay.unpack(v) for v in m.lookup(struct.pack("<I", path))]
        return sum(v["count"] for v in vals), sum(sum(v["buckets"]) for v in vals)

    frame = P.query_frame("h5.lab.test", qid=0x5151, sport=40555)
    assert ask(lo, frame)[0] == "XDP_PASS"          # miss: stamped on its way to the resolver
    q = P.dns_query("h5.lab.test", qid=0x5151)
    assert lo.run(TC, P.response_frame(q, ["198.19.0.5"], dport=40555)).retval == 0
    assert lat(1) == (1, 1)
    assert ask(lo, P.query_frame("h5.lab.test", qid=0x5152))[0] == "XDP_TX"
    assert lat(0) == (1, 1)
    assert lo.counters()["latency_unmatched"] == 0
