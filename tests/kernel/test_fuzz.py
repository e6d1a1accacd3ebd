"""Packet fuzzing through the XDP and TC programs (BPF_PROG_TEST_RUN).

Hypothesis builds queries and answers that lie in every field (labels > 63,
names > 255, compression loops and forward pointers, qdcount 0/2/65535, odd
VLAN stacks, IPv6 extension chains, IPv4 options, UDP and IP length lies,
answers sent as queries, random bytes), with rules, cache entries and rate
limits in place so that mutated queries reach every answer the fast path
builds. tests/helpers/fuzz.py holds the strategies and the oracles (what is
checked for every packet is listed there).

`make test` runs NEXUS_FUZZ_EXAMPLES (default 5000) packets per program;
`make fuzz` runs 50,000. The hypothesis database is off (nothing is written
to the checkout); a failure prints the packet and hypothesis's seed.
"""
from __future__ import annotations

import os

import dns.message
import dns.rcode
import dns.rrset
import pytest
from hypothesis import HealthCheck, Phase, given, settings

from helpers import fuzz as F
from helpers import packets as P
from helpers import policy_maps
from helpers.bpf import Loaded, apply_config, private_pin_dir

EXAMPLES = int(os.environ.get("NEXUS_FUZZ_EXAMPLES", "5000"))
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
                         suppress_health_check=list(HealthCheck),
                         phases=(Phase.explicit, Phase.generate, Phase.shrink))


def _answer(name: str, qtype: str, records: list[str], *, edns: bool = False, do: bool = False,
            rcode: int = 0, extra=None) -> bytes:
    q = dns.message.make_query(name, qtype, use_edns=0 if edns or do else False, want_dnssec=do)
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    if records:
        r.answer.append(dns.rrset.from_text(name + ".", 300, "IN", qtype, *records))
    if extra:
        extra(r)
    return r.to_wire()


def _seed_cache(h: F.Harness) -> None:
    """Answers for the names the query strategies draw, through TC like the resolver's."""
    def soa(r):
        r.authority.append(dns.rrset.from_text("lab.test.", 300, "IN", "SOA",
                                               "ns.lab.test. hostmaster.lab.test. 1 3600 600 86400 300"))

    def more(r):
        r.authority.append(dns.rrset.from_text("lab.test.", 600, "IN", "NS", "ns.lab.test."))
        r.additional.append(dns.rrset.from_text("ns.lab.test.", 120, "IN", "A", "198.18.0.1"))
    answers = []
    for i, name in enumerate(F.CACHED[:8], 1):
        answers.append(_answer(name, "A", [f"198.19.0.{i}"]))
        answers.append(_answer(name, "A", [f"198.19.1.{i}"], edns=True, do=True))
    answers.append(_answer("v6.lab.test", "AAAA", ["2001:db8:19::6"], edns=True))
    answers.append(_answer("multi.lab.test", "A", ["198.19.10.1", "198.19.10.2", "198.19.10.3"], extra=more))
    answers.append(_answer("nx.lab.test", "A", [], rcode=dns.rcode.NXDOMAIN, extra=soa))
    for a in answers:
        h.tc(F.response_frame(a))
    assert h.paths.get("cache-insert") == len(answers)


@pytest.fixture(scope="module")
def world(built):
    lo = Loaded([F.XDP, F.TC], private_pin_dir("fuzz"), map_sizes=F.MAP_SIZES)
    h = None
    try:
        apply_config(lo, F.FUZZ_CONFIG)
        policy_maps.install(lo, F.RULES)
        h = F.Harness(lo, F.RULES)
        _seed_cache(h)
        yield h
    finally:
        if h:
            h.close()
        lo.close()


def test_fuzz_xdp(world):
    done = []

    @FUZZ_SETTINGS
    @given(F.xdp_inputs)
    def one(frame):
        world.xdp(frame)
        done.append(1)

    one()
    print(f"xdp: {len(done)} examples; verdicts {world.verdicts}; paths {world.paths}")
    assert len(done) >= EXAMPLES
    # the oracles saw every kind of answer the fast path builds
    for path in ("cache", "block", "slip", "synth", "policy-through-tc", "redirect-rewrite"):
        assert world.paths.get(path, 0) > 0, (path, world.paths)
    assert world.verdicts.get((F.XDP, F.XDP_TX), 0) > 100, world.verdicts


def test_fuzz_tc(world):
    done = []

    @FUZZ_SETTINGS
    @given(F.tc_inputs)
    def one(frame):
        world.tc(frame)
        done.append(1)

    one()
    print(f"tc: {len(done)} examples; verdicts {world.verdicts}; paths {world.paths}")
    assert len(done) >= EXAMPLES
    for path in ("cache-insert", "cache-replayed", "redirect-rewrite"):
        assert world.paths.get(path, 0) > 0, (path, world.paths)


def _bases() -> list[tuple[str, bytes]]:
    q = P.dns_query
    return [
        ("v4 cached", F.plain_frame(q("h3.lab.test", qid=1))),
        ("v6 cached edns do", F.plain_frame(q("H3.lab.TEST", qid=2, do=True), 6)),
        ("vlan blocked", F.plain_frame(q("x.bad.test", qid=3, edns=True), vlans=[(P.ETH_P_8021Q, 7)])),
        ("qinq synth", F.plain_frame(q("synth.test", qid=4), 6, vlans=[(P.ETH_P_8021AD, 1), (P.ETH_P_8021Q, 2)])),
        ("ecs", F.plain_frame(q("h4.lab.test", qid=5, ecs="198.18.7.0/24"))),
        ("answer v4", F.response_frame(_answer("h5.lab.test", "A", ["198.19.0.5"]))),
        ("answer redirect", F.response_frame(_answer("redir.test", "A", ["198.19.0.9", "198.19.0.10"],
                                                     edns=True), 6)),
    ]


def test_truncation_at_every_offset(world):
    """Each base frame cut at every length an Ethernet frame can have, through both programs."""
    n = 0
    for _name, frame in _bases():
        for cut in range(F.MIN_FRAME, len(frame) + 1):
            world.xdp(frame[:cut])
            world.tc(frame[:cut])
            n += 1
    assert n > 500
