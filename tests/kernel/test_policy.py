"""DNS policy in the kernel (BPF_PROG_TEST_RUN): every action and pattern kind,
precedence, mixed case, long names, verified allows, generation swaps."""
import struct

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from helpers import packets as P
from helpers.bpf import XDP_VERDICTS, apply_config
from nexusctl.policy import hashing
from nexusctl.policy.kernel import PolicyKernel
from nexusctl.policy.rules import Attrs, Group
from nexusctl.policy.store import Source
from nexusctl.tools.runner import Runner

XDP, TC = "nexus_dns_xdp", "nexus_dns_tc"


@pytest.fixture
def lo(dns_objs):
    apply_config(dns_objs)
    return dns_objs


def load(lo, rules: list[tuple[str, Attrs]], bloom=True) -> PolicyKernel:
    pk = PolicyKernel(Runner(), lo.pin_dir, max_rules=2097152, bloom=bloom)
    pk.load([Source("test", [Group(a, [p]) for p, a in rules])])
    return pk


def ask(lo, name, qtype="A", family=4, **kw):
    frame = P.query_frame(name, qtype, family=family, **kw)
    res = lo.run(XDP, frame)
    verdict = XDP_VERDICTS[res.retval]
    msg = None
    if verdict == "XDP_TX":
        p = P.parse(res.data_out)
        assert p.ip_csum_ok and p.udp_csum_ok
        msg = dns.message.from_wire(p.payload)
    return verdict, msg


def block(prio=100, **kw):
    return Attrs.make("block", prio, **kw)


def test_exact_rule_blocks_that_name_only_whatever_the_case(lo):
    load(lo, [("ads.example.com", block())])
    v, msg = ask(lo, "ADS.Example.COM", qid=0x77)
    assert v == "XDP_TX" and msg.rcode() == dns.rcode.NXDOMAIN and msg.id == 0x77
    assert msg.question[0].name.to_text() == "ADS.Example.COM."
    assert ask(lo, "x.ads.example.com")[0] == "XDP_PASS"
    assert ask(lo, "example.com")[0] == "XDP_PASS"
    c = lo.counters()
    assert c["policy_blocked"] == 1 and c["blocked"] == 1


def test_wildcard_matches_below_the_suffix_not_the_apex(lo):
    load(lo, [("*.tracker.test", block())])
    assert ask(lo, "a.tracker.test")[0] == "XDP_TX"
    assert ask(lo, "x.y.z.TRACKER.test")[0] == "XDP_TX"
    assert ask(lo, "tracker.test")[0] == "XDP_PASS"
    assert ask(lo, "nottracker.test")[0] == "XDP_PASS"


def test_prefix_rules(lo):
    load(lo, [("ads.*", block()), ("metrics*", block())])
    assert ask(lo, "ads.foo.test")[0] == "XDP_TX"
    assert ask(lo, "Metrics-eu.vendor.test")[0] == "XDP_TX"
    assert ask(lo, "metrics.test")[0] == "XDP_TX"
    assert ask(lo, "bads.foo.test")[0] == "XDP_PASS"
    assert ask(lo, "adsx.foo.test")[0] == "XDP_PASS"        # "ads." needs the dot


def test_synthesize_both_families_and_nodata_for_other_types(lo):
    load(lo, [("intranet.test", Attrs.make("synthesize", 100, ["198.18.0.10", "2001:db8::10"])),
              ("v4only.test", Attrs.make("synthesize", 100, "198.18.0.11"))])
    lo.set_config(synth_ttl=42)
    v, msg = ask(lo, "Intranet.test", edns=True)
    assert v == "XDP_TX" and msg.answer[0][0].to_text() == "198.18.0.10" and msg.answer[0].ttl == 42
    assert msg.answer[0].name.to_text() == "Intranet.test." and msg.edns == 0
    v, msg = ask(lo, "intranet.test", "AAAA", family=6)
    assert v == "XDP_TX" and msg.answer[0][0].to_text() == "2001:db8::10"
    v, msg = ask(lo, "v4only.test", "AAAA")
    assert v == "XDP_TX" and msg.rcode() == dns.rcode.NOERROR and not msg.answer     # NODATA
    v, msg = ask(lo, "intranet.test", "MX")
    assert v == "XDP_TX" and not msg.answer
    assert lo.counters()["policy_synthesized"] == 4


def test_redirect_rewrites_the_resolvers_answer_at_tc(lo):
    load(lo, [("cdn.test", Attrs.make("redirect", 100, ["198.18.0.20", "2001:db8::20"]))])
    # XDP lets the query go to the resolver, and never from the cache
    assert ask(lo, "cdn.test")[0] == "XDP_PASS"
    for family, qtype, real, want in ((4, "A", ["203.0.113.1", "203.0.113.2"], "198.18.0.20"),
                                      (6, "AAAA", ["2001:db8:ffff::1"], "2001:db8::20")):
        q = P.dns_query("CDN.test", qtype)
        resp = P.response_frame(q, real, family=family, ttl=123)
        res = lo.run(TC, resp)
        assert res.retval == 0
        p = P.parse(res.data_out)
        assert p.udp_csum_ok and p.ip_csum_ok
        msg = dns.message.from_wire(p.payload)
        assert {r.to_text() for r in msg.answer[0]} == {want}
        assert msg.answer[0].ttl == 123                       # TTL kept
    # rewritten answers are not cached
    klay = lo.btf.struct("nexus_cache_key")
    with lo.map("nexus_cache") as m:
        assert list(m.keys()) == []
    assert lo.counters()["policy_redirected"] == 2


def test_redirect_with_one_family_gives_nodata_for_the_other(lo):
    load(lo, [("cdn.test", Attrs.make("redirect", 100, "198.18.0.20"))])
    v, msg = ask(lo, "cdn.test", "AAAA")
    assert v == "XDP_TX" and not msg.answer and msg.rcode() == dns.rcode.NOERROR


def test_allow_of_better_priority_punches_a_hole(lo):
    load(lo, [("*.example.test", block(100)), ("good.example.test", Attrs.make("allow", 50)),
              ("worse.example.test", Attrs.make("allow", 200))])
    assert ask(lo, "good.example.test")[0] == "XDP_PASS"
    assert ask(lo, "bad.example.test")[0] == "XDP_TX"
    assert ask(lo, "worse.example.test")[0] == "XDP_TX"
    assert lo.counters()["policy_allowed"] == 1


def test_on_a_priority_tie_the_longer_pattern_wins(lo):
    load(lo, [("*.example.test", block(100)), ("*.b.example.test", Attrs.make("allow", 100))])
    assert ask(lo, "a.b.example.test")[0] == "XDP_PASS"
    assert ask(lo, "a.c.example.test")[0] == "XDP_TX"


def test_qtypes_limit_a_rule(lo):
    load(lo, [("v6less.test", block(qtypes=["AAAA"]))])
    assert ask(lo, "v6less.test", "A")[0] == "XDP_PASS"
    assert ask(lo, "v6less.test", "AAAA")[0] == "XDP_TX"


def test_block_response_kinds(lo):
    load(lo, [("a.test", block()), ("b.test", block(block="nodata")), ("c.test", block(block="drop"))])
    lo.set_config(block_response=1)                      # config: REFUSED
    v, msg = ask(lo, "a.test")
    assert msg.rcode() == dns.rcode.REFUSED
    v, msg = ask(lo, "b.test")
    assert msg.rcode() == dns.rcode.NOERROR and not msg.answer
    assert ask(lo, "c.test")[0] == "XDP_DROP"
    lo.set_config(block_response=2)                      # config: drop
    assert ask(lo, "a.test")[0] == "XDP_DROP"


def test_policy_beats_the_cache(lo):
    q = P.dns_query("h1.lab.test")
    assert lo.run(TC, P.response_frame(q, ["198.19.0.1"])).retval == 0
    assert ask(lo, "h1.lab.test")[0] == "XDP_TX"
    v, msg = ask(lo, "h1.lab.test")
    assert msg.rcode() == dns.rcode.NOERROR and msg.answer            # from the cache
    load(lo, [("h1.lab.test", block())])
    v, msg = ask(lo, "h1.lab.test")
    assert msg.rcode() == dns.rcode.NXDOMAIN


def _label_name(labels: list[bytes]) -> str:
    return ".".join(x.decode() for x in labels)


def test_names_of_255_bytes_and_127_labels(lo):
    long_labels = [b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 61]
    longest = _label_name(long_labels)                       # wire length 255
    many = _label_name([b"x"] * 126 + [b"y"])                # 127 labels, wire length 255
    load(lo, [(longest, block()), (f"*.{_label_name([b'x'] * 2 + [b'y'])}", block())])
    assert ask(lo, longest.upper())[0] == "XDP_TX"
    assert ask(lo, many)[0] == "XDP_TX"
    assert ask(lo, _label_name([b"x"] * 126 + [b"z"]))[0] == "XDP_PASS"


def test_an_allow_is_honoured_only_when_its_pattern_matches(lo):
    """A forged allow entry (a hash collision) must not unblock a name."""
    pk = load(lo, [("*.evil.test", block()), ("fine.test", Attrs.make("allow", 1))])
    seeds = pk.seeds()
    # plant an allow under the exact key of www.evil.test, with fine.test's pattern as its proof
    forged = hashing.key([b"www", b"evil", b"test"], hashing.EXACT, seeds)
    st = pk.state()
    with lo.map("nexus_pol_rules") as outer:
        inner_id = int.from_bytes(outer.lookup(st["gen"].to_bytes(4, "little"))[:4], "little")
    from nexusctl.tools import libbpf as L
    with L.MapHandle(L.map_fd_by_id(inner_id)) as rules:
        rules.update(forged, Attrs.make("allow", 1).value(pk.val_layout, 13))
    with lo.map("nexus_pol_verify") as verify:
        real = hashing.key([b"fine", b"test"], hashing.EXACT, seeds)
        verify.update(forged, verify.lookup(real))
    assert ask(lo, "www.evil.test")[0] == "XDP_TX"           # still blocked
    assert ask(lo, "fine.test")[0] == "XDP_PASS"


def test_a_new_generation_replaces_the_old_set(lo):
    pk = load(lo, [("one.test", block())])
    assert ask(lo, "one.test")[0] == "XDP_TX"
    gen = pk.state()["gen"]
    pk.load([Source("test", [Group(block(), ["two.test"])])])
    assert pk.state()["gen"] == 1 - gen
    assert ask(lo, "one.test")[0] == "XDP_PASS"
    assert ask(lo, "two.test")[0] == "XDP_TX"
    # the old generation's slot is emptied
    with lo.map("nexus_pol_rules") as outer:
        assert outer.lookup(gen.to_bytes(4, "little")) is None


@pytest.mark.parametrize("bloom", [True, False])
def test_bloom_on_or_off_gives_the_same_answers(lo, bloom):
    load(lo, [(f"n{i}.bulk.test", block()) for i in range(500)], bloom=bloom)
    assert ask(lo, "n7.bulk.test")[0] == "XDP_TX"
    assert ask(lo, "n500.bulk.test")[0] == "XDP_PASS"


def test_runtime_add_and_remove_in_place(lo):
    pk = load(lo, [("*.ads.test", block(100))])
    gen = pk.state()["gen"]
    pk.add("ok.ads.test", Attrs.make("allow", 10), {})
    assert ask(lo, "ok.ads.test")[0] == "XDP_PASS"
    assert pk.state()["gen"] == gen                          # no swap for one rule
    pk.remove("ok.ads.test", {})
    assert ask(lo, "ok.ads.test")[0] == "XDP_TX"
    pk.add("trk*", block(), {})
    assert ask(lo, "trk.x.test")[0] == "XDP_TX"
    pk.remove("trk*", {})
    assert ask(lo, "trk.x.test")[0] == "XDP_PASS"


def test_bloom_filled_by_the_helper_program(lo):
    """A big set fills its bloom filter through nexus_bloom_fill (BPF_PROG_TEST_RUN on
    buffers of keys), not a syscall per key; every rule is still found."""
    import os
    (lo.pin_dir / "progs").mkdir(exist_ok=True)
    lo.objs["nexus_dns_xdp"].pin_program("nexus_bloom_fill", str(lo.pin_dir / "progs" / "nexus_bloom_fill"))
    names = [f"r{i}.filled.test" for i in range(3000)]
    pk = PolicyKernel(Runner(), lo.pin_dir, max_rules=2097152, bloom=True)
    pk.load([Source("test", [Group(block(), names)])])
    for n in (names[0], names[1234], names[-1]):
        assert ask(lo, n)[0] == "XDP_TX"
    assert ask(lo, "r3000.filled.test")[0] == "XDP_PASS"
    assert os.path.exists(lo.pin_dir / "progs" / "nexus_bloom_fill")
