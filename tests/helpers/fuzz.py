"""The packet fuzzer's parts: frame builders that can lie in every field,
hypothesis strategies for queries and responses, and the oracles that judge
what the XDP and TC programs did with them (tests/kernel/test_fuzz.py).

The oracles, for every packet:
- the verdict is one of the expected set (XDP: DROP/PASS/TX; TC: OK, or SHOT
  for a resolver answer the policy must not let out);
- a passed packet leaves the program byte for byte as it came in (TC: except
  the addresses a redirect rule rewrites);
- an XDP_TX output is a valid DNS response (dnspython parses it) to that very
  query: same ID, same question bytes (0x20 case kept), checksums right, L2-L4
  turned around, no bigger than the client accepts; its records are exactly
  the cached answer (TTLs aged), the block/slip answer, or the synthesized one;
- the kernel's policy decision equals the contract's (tests/helpers/policy_maps.decide);
- what TC caches is a complete, consistent answer, and XDP serves it back exactly;
- counters never go backwards and move by exactly one packet per run; no map
  holds more entries than its max_entries.
"""
from __future__ import annotations

import ipaddress
import struct
import time
from dataclasses import dataclass, field

import dns.edns
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
from hypothesis import strategies as st

from helpers import dnswire as W
from helpers import packets as P
from helpers.policy_maps import Rule, decide

XDP, TC = "nexus_dns_xdp", "nexus_dns_tc"
XDP_DROP, XDP_PASS, XDP_TX = 1, 2, 3
TC_OK, TC_SHOT = 0, 2
MIN_FRAME = 14                       # BPF_PROG_TEST_RUN refuses less than an Ethernet header
MAX_FRAME = 3000                     # BPF_PROG_TEST_RUN takes at most a page less head- and tailroom

# ------------------------------------------------------------------ the world the fuzzer plays in

RULES = [
    Rule("blocked.test", "block", priority=100),
    Rule("*.bad.test", "block", priority=100),
    Rule("ok.bad.test", "allow", priority=50),
    Rule("synth.test", "synthesize", ["198.19.77.7"], priority=100),
    Rule("synth6.test", "synthesize", ["2001:db8:77::7"], priority=100),
    Rule("synth46.test", "synthesize", ["198.19.77.46", "2001:db8:77::46"], priority=100),
    Rule("redir.test", "redirect", ["198.19.88.8"], priority=100),
    Rule("*.redir6.test", "redirect", ["2001:db8:88::8"], priority=100),
    Rule("redir46.test", "redirect", ["198.19.88.46", "2001:db8:88::46"], priority=100),
    Rule("ads.*", "block", priority=200),
    Rule("ads.keep.test", "allow", priority=10),
]
CACHED = [f"h{i}.lab.test" for i in range(1, 9)] + ["nx.lab.test", "multi.lab.test", "v6.lab.test"]
POOL = CACHED + ["blocked.test", "x.bad.test", "deep.x.bad.test", "bad.test", "ok.bad.test", "synth.test",
                 "synth6.test", "synth46.test", "redir.test", "a.redir6.test", "redir46.test", "redir6.test", "ads.example", "ads.keep.test",
                 "adsx.test", "xjwqkzpvbtqr.com", "a3f9c2e1b7d44e21.net", "lab.test", "test", "."]
CLIENTS4 = ["198.18.0.2", "198.18.0.3", "198.18.7.9"]
CLIENTS6 = ["2001:db8:18::2", "2001:db8:18::3"]

FUZZ_CONFIG = """
dns:
  rate_limit: {enabled: true, rate: 20, burst: 5, action: slip, slip_ratio: 2, max_clients: 16}
  dga: {mode: block, threshold: 600}
  cache: {max_entries: 64, max_ttl: 3600}
  latency: {max_inflight: 32}
policy: {block_response: nxdomain, synth_ttl: 60}
"""
MAP_SIZES = {"nexus_cache": 64, "nexus_ratelimit": 16, "nexus_inflight": 32}
SYNTH_TTL = 60
EDNS_SIZE = 1232


# ------------------------------------------------------------------ frames

@dataclass
class L3:
    family: int = 4
    src: str = P.CLIENT4
    dst: str = P.SERVER4
    ip_options: bytes = b""
    frag: int = 0
    tot_len_delta: int = 0           # IPv4 total length / IPv6 payload length lie
    ihl_override: int | None = None
    version_override: int | None = None
    ext: list = field(default_factory=list)     # IPv6 [(type, payload bytes)]
    ttl: int = 64


def _ipv6_ext_chain(ext: list, last_nh: int) -> tuple[int, bytes]:
    """[(type, length8)] → (first next-header, encoded chain)."""
    out = b""
    types = [t for t, _ in ext] + [last_nh]
    for i, (t, ln) in enumerate(ext):
        nxt = types[i + 1]
        if t == 44:
            out += struct.pack("!BBHI", nxt, 0, ln & 0xFFFF, 7)     # ln: frag_off field as drawn
        else:
            ln &= 0xFF
            out += bytes([nxt, ln]) + bytes((ln + 1) * 8 - 2)          # Pad1 options
    return types[0], out


def frame(payload: bytes, *, l3: L3, sport: int, dport: int, udp_len_delta: int = 0, udp_csum: str = "ok",
          vlans=(), proto: int = P.UDP, eth_src: bytes = P.CLIENT_MAC, eth_dst: bytes = P.SERVER_MAC) -> bytes:
    ulen = (8 + len(payload) + udp_len_delta) & 0xFFFF
    seg = P.udp_segment(l3.src, l3.dst, sport, dport, payload, length=ulen, checksum=(udp_csum == "ok"))
    if udp_csum == "zero" and l3.family == 4:
        seg = seg[:6] + b"\0\0" + seg[8:]
    elif udp_csum == "junk":
        seg = seg[:6] + b"\x12\x34" + seg[8:]
    if l3.family == 4:
        body = P.ipv4(l3.src, l3.dst, proto, seg, ttl=l3.ttl, options=l3.ip_options, frag=l3.frag)
        total = len(body) + l3.tot_len_delta
        b = bytearray(body)
        struct.pack_into("!H", b, 2, total & 0xFFFF)
        if l3.ihl_override is not None:
            b[0] = (b[0] & 0xF0) | (l3.ihl_override & 0xF)
        if l3.version_override is not None:
            b[0] = (b[0] & 0x0F) | ((l3.version_override & 0xF) << 4)
        struct.pack_into("!H", b, 10, 0)
        struct.pack_into("!H", b, 10, P.csum(bytes(b[:(b[0] & 0xF) * 4])))
        ethertype = P.ETH_P_IP
    else:
        first, chain = _ipv6_ext_chain(l3.ext, proto)
        b = bytearray(P.ipv6(l3.src, l3.dst, proto, seg, hlim=l3.ttl, ext=chain, first_nh=first))
        struct.pack_into("!H", b, 4, (len(b) - 40 + l3.tot_len_delta) & 0xFFFF)
        if l3.version_override is not None:
            b[0] = (b[0] & 0x0F) | ((l3.version_override & 0xF) << 4)
        ethertype = P.ETH_P_IPV6
    return P.ether(bytes(b), ethertype, src=eth_src, dst=eth_dst, vlans=list(vlans))


def plain_frame(payload: bytes, family: int = 4, src: str | None = None, sport: int = 40000, dport: int = 53,
                vlans=()) -> bytes:
    src = src or (P.CLIENT4 if family == 4 else P.CLIENT6)
    dst = P.SERVER4 if family == 4 else P.SERVER6
    return frame(payload, l3=L3(family, src, dst), sport=sport, dport=dport, vlans=vlans)


def response_frame(payload: bytes, family: int = 4, dst: str | None = None, dport: int = 40000, sport: int = 53,
                   vlans=(), udp_csum: str = "ok", l3: L3 | None = None) -> bytes:
    dst = dst or (P.CLIENT4 if family == 4 else P.CLIENT6)
    src = P.SERVER4 if family == 4 else P.SERVER6
    l3 = l3 or L3(family, src, dst)
    return frame(payload, l3=l3, sport=sport, dport=dport, vlans=vlans, udp_csum=udp_csum,
                 eth_src=P.SERVER_MAC, eth_dst=P.CLIENT_MAC)


# ------------------------------------------------------------------ DNS messages

def wire_name(labels: list[bytes]) -> bytes:
    return b"".join(bytes([len(x)]) + x for x in labels) + b"\0"


def labels_of(name: str) -> list[bytes]:
    return [x.encode() for x in name.strip(".").split(".") if x]


def query_wire(qid: int, flags: int, qname: bytes, qtype: int, qclass: int, *, counts=None,
               opt: bytes | None = None, trailing: bytes = b"") -> bytes:
    qd, an, ns, ar = counts or (1, 0, 0, 1 if opt is not None else 0)
    out = struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar) + qname + struct.pack("!HH", qtype, qclass)
    if opt is not None:
        out += opt
    return out + trailing


def opt_rr(size: int = 1232, do: bool = False, options: list[tuple[int, bytes]] = (), owner: bytes = b"\0",
           rdlen_delta: int = 0) -> bytes:
    body = b"".join(struct.pack("!HH", c, len(d)) + d for c, d in options)
    return owner + struct.pack("!HHIH", 41, size, 0x8000 if do else 0, (len(body) + rdlen_delta) & 0xFFFF) + body


def case_mix(name: bytes, mask: int) -> bytes:
    out = bytearray(name)
    for i, c in enumerate(out):
        if 97 <= c <= 122 and (mask >> (i % 61)) & 1:
            out[i] = c - 32
    return bytes(out)


# ------------------------------------------------------------------ strategies
#
# One hypothesis draw per packet: a string of entropy bytes that a Dice turns
# into choices (hypothesis draws cost ~0.3 ms each; a packet needs ~50 choices).
# Zero bytes (and running out of them) pick the plainest choice, so when
# hypothesis shrinks a failure towards zeros, the packet shrinks towards a
# plain query with only the bytes that matter left odd.

QTYPES = [1, 28, 255, 16, 15, 65, 5, 2, 6, 12, 33, 0, 65535, 41]


class Dice:
    def __init__(self, entropy: bytes):
        self.b = entropy
        self.i = 0

    def byte(self) -> int:
        if self.i >= len(self.b):
            return 0
        self.i += 1
        return self.b[self.i - 1]

    def int(self, n: int) -> int:
        """0 .. n-1 (n up to 2**32)."""
        if n <= 1:
            return 0
        v = 0
        for _ in range((n - 1).bit_length() // 8 + 1):
            v = (v << 8) | self.byte()
        return v % n

    def pct(self, p: int) -> bool:
        """True with probability p%; a zero byte says False."""
        return self.byte() % 100 >= 100 - p

    def choice(self, seq):
        return seq[self.int(len(seq))]

    def bytes(self, n: int) -> bytes:
        return bytes(self.byte() for _ in range(n))


def draw_name(d: Dice) -> bytes:
    """A QNAME in wire form: usually a name the world knows, sometimes a random
    one, sometimes something no valid name looks like (labels > 63, > 255
    bytes, pointers, loops, reserved label types, no terminator)."""
    kind = d.int(100)
    if kind < 60:
        return case_mix(wire_name(labels_of(d.choice(POOL))), d.int(1 << 32) if d.pct(50) else 0)
    if kind < 78:
        labs = []
        for _ in range(d.int(6)):
            body = d.bytes(1 + d.int(d.choice([8, 20, 63])))
            labs.append(bytes(c % 26 + 97 for c in body) if d.pct(50) else body)
        suffix = d.choice([[], [b"lab", b"test"], [b"bad", b"test"], [b"redir6", b"test"], [b"com"]])
        return wire_name(labs + suffix)
    if kind < 83:                                           # long: up to and past 255
        return wire_name([b"a" * (1 + d.int(63))] * (1 + d.int(140)))
    if kind < 91:                                           # raw label structure
        out = b"".join(bytes([d.byte()]) + d.bytes(d.int(70)) for _ in range(d.int(6)))
        return out + d.choice([b"\0", b"", b"\xc0\x0c", b"\x40", b"\x80\x00"])
    # compression pointers: to itself, forward, backward, loops
    labs = [d.choice([b"a", b"bad", b"test", b"x" * 63]) for _ in range(d.int(4))]
    return b"".join(bytes([len(x)]) + x for x in labs) + struct.pack("!H", 0xC000 | d.int(0x4000))


def draw_edns(d: Dice) -> bytes | None:
    if not d.pct(45):
        return None
    opts = []
    for _ in range(d.int(5)):
        k = d.int(4)
        if k == 0:
            opts.append((8, d.choice([bytes.fromhex("0001180012c612"), bytes.fromhex("00011800"), b""])))
        elif k == 1:
            opts.append((10, d.bytes(8 + d.int(33))))       # cookie
        elif k == 2:
            opts.append((12, bytes(d.int(400))))            # padding
        else:
            opts.append((d.int(65536), d.bytes(d.int(20))))
    size = d.choice([1232, 512, 4096, 0, 100, 65535])
    owner = d.choice([b"\x01a\0", b"\xc0\x0c"]) if d.pct(5) else b"\0"
    delta = d.choice([-1, 1, 7, -4000]) if d.pct(8) else 0
    return opt_rr(size, d.pct(50), opts, owner, delta)


def draw_query(d: Dice) -> bytes:
    qid = d.int(65536)
    flags = d.int(65536) if d.pct(10) else d.choice([0x0100, 0x0000, 0x0110, 0x0120])
    qname = draw_name(d)
    k = d.int(20)
    qtype = 1 if k < 10 else 28 if k < 13 else d.choice(QTYPES) if k < 18 else d.int(65536)
    qclass = d.choice([3, 255, 254, 0, 65535]) if d.pct(10) else 1
    opt = draw_edns(d)
    counts = None
    if d.pct(10):
        counts = (d.choice([1, 0, 2, 65535]), d.choice([0, 0, 1, 65535]), d.choice([0, 0, 1]),
                  d.choice([0, 1, 2, 65535]))
    trailing = d.bytes(1 + d.int(40)) if d.pct(10) else b""
    return query_wire(qid, flags, qname, qtype, qclass, counts=counts, opt=opt, trailing=trailing)


def draw_l3(d: Dice, family: int, src: str, dst: str) -> L3:
    l3 = L3(family, src, dst)
    odd = d.int(100) if d.pct(25) else 99
    if family == 4:
        if odd < 35:
            l3.ip_options = d.choice([b"\x01\x01\x01\x00", b"\x94\x04\x00\x00", bytes(40), b"\x01" * 8])
        elif odd < 50:
            l3.frag = d.choice([0x2000, 0x0001, 0x2001, 0x4000, 0x1FFF])
        elif odd < 70:
            l3.tot_len_delta = d.choice([-1, -8, -30, 1, 20, -100, 5000])
        elif odd < 80:
            l3.ihl_override = d.int(16)
        elif odd < 85:
            l3.version_override = d.int(16)
    else:
        if odd < 50:
            l3.ext = [(d.choice([0, 60, 43, 44, 51, 59]), d.choice([0, 0, 1, 3, 255, 0x2001, 0x0008]))
                      for _ in range(1 + d.int(6))]
        elif odd < 70:
            l3.tot_len_delta = d.choice([-1, -8, -30, 1, 20, -100])
        elif odd < 75:
            l3.version_override = d.int(16)
    return l3


def draw_frame(d: Dice, payload: bytes, *, response: bool) -> bytes:
    family = 6 if d.pct(33) else 4
    if family == 4:
        client = str(ipaddress.IPv4Address(0xC6120000 + d.int(0x20000))) if d.pct(30) else d.choice(CLIENTS4)
        server = P.SERVER4
    else:
        client = str(ipaddress.IPv6Address((0x20010DB8 << 96) + d.int(1 << 32))) if d.pct(30) else \
            d.choice(CLIENTS6)
        server = P.SERVER6
    src, dst = (server, client) if response else (client, server)
    l3 = draw_l3(d, family, src, dst)
    vlans = []
    if d.pct(10):
        vlans = [(d.choice([P.ETH_P_8021Q, P.ETH_P_8021AD]), d.int(4096)) for _ in range(1 + d.int(4))]
    cport = d.int(65536) if d.pct(25) else d.choice([40000, 33333, 53, 1024])
    dns_port = d.choice([853, 5353, 0, 54]) if d.pct(6) else 53
    sport, dport = (dns_port, cport) if response else (cport, dns_port)
    proto = d.choice([P.TCP, 1, 132]) if d.pct(3) else P.UDP
    udp_delta = d.choice([-1, -4, -8, -9, 1, 4, 200, -5000]) if d.pct(8) else 0
    csum = d.choice(["zero", "junk"]) if d.pct(10) else "ok"
    eth = (P.SERVER_MAC, P.CLIENT_MAC) if response else (P.CLIENT_MAC, P.SERVER_MAC)
    f = frame(payload, l3=l3, sport=sport, dport=dport, udp_len_delta=udp_delta, udp_csum=csum, vlans=vlans,
              proto=proto, eth_src=eth[0], eth_dst=eth[1])
    return mutate(d, f)[:MAX_FRAME]


def mutate(d: Dice, f: bytes) -> bytes:
    """Usually the frame as built; else bytes replaced, cut or appended."""
    if not d.pct(30):
        return f
    b = bytearray(f)
    k = d.int(100)
    if k < 50:
        for _ in range(1 + d.int(4)):
            b[d.int(len(b))] = d.byte()
    elif k < 85:
        b = b[:MIN_FRAME + d.int(len(b) - MIN_FRAME + 1)]
    else:
        b += d.bytes(1 + d.int(64))
    return bytes(b)


ANSWER_TYPES = ["A", "AAAA", "CNAME", "TXT", "MX", "NS"]


def draw_response(d: Dice) -> bytes:
    """Resolver-shaped answers (dnspython builds them), often then bent: flags,
    counts, pointers, lengths."""
    name = d.choice(POOL[:-1])
    qtype = d.choice(["A", "A", "AAAA", "TXT", "MX", "ANY"])
    q = dns.message.make_query(name, qtype, use_edns=0 if d.pct(50) else False, want_dnssec=d.pct(30))
    q.id = d.int(65536)
    r = dns.message.make_response(q)
    r.set_rcode(d.choice([0, 0, 0, 3, 2, 5, 1]))
    n_ans = d.int(21) if d.pct(15) else d.int(4)
    for i in range(n_ans):
        t = d.choice(ANSWER_TYPES) if qtype in ("ANY", "TXT", "MX") else d.choice([qtype, qtype, qtype, "CNAME"])
        owner = f"alias{i}.lab.test." if d.pct(20) else name + "."
        ttl = d.choice([300, 60, 1, 0, 3600, 86400 * 30, 0x7FFFFFFF, 0xFFFFFFFF])
        rd = {"A": f"198.19.{i}.{1 + d.int(254)}", "AAAA": f"2001:db8:19::{i + 1:x}",
              "CNAME": f"c{i}.lab.test.", "TXT": '"' + "t" * d.int(200) + '"',
              "MX": f"10 mx{i}.lab.test.", "NS": f"ns{i}.lab.test."}[t]
        r.answer.append(dns.rrset.from_text(owner, ttl, "IN", t, rd))
    if d.pct(25):
        r.authority.append(dns.rrset.from_text("lab.test.", 300, "IN", "SOA",
                                               "ns.lab.test. hostmaster.lab.test. 1 3600 600 86400 300"))
    if d.pct(20):
        r.additional.append(dns.rrset.from_text("ns.lab.test.", 120, "IN", "A", "198.18.0.1"))
    if r.edns >= 0 and d.pct(15):
        r.use_edns(0, payload=1232, options=[dns.edns.ECSOption.from_text("198.18.7.0/24/24")])
    b = bytearray(r.to_wire(max_size=65535))
    k = d.int(100) if d.pct(35) else 99
    if k < 25:                                              # flags: TC, opcode, QR, AD, AA, rcode
        struct.pack_into("!H", b, 2, struct.unpack_from("!H", b, 2)[0] ^ d.choice(
            [0x0200, 0x0800, 0x8000, 0x0020, 0x0400, 0x000F]))
    elif k < 50:                                            # counts that lie
        struct.pack_into("!H", b, d.choice([4, 6, 8, 10]), d.choice([0, 1, 2, 17, 18, 65535]))
    elif k < 65:                                            # trailing bytes
        b += d.bytes(1 + d.int(30))
    elif k < 85:                                            # a byte anywhere (pointers, lengths, types)
        for _ in range(1 + d.int(3)):
            b[12 + d.int(max(1, len(b) - 12))] = d.byte()
    elif k < 95:                                            # cut
        b = b[:d.int(len(b) + 1)]
    return bytes(b)


def draw_xdp_input(d: Dice) -> bytes:
    k = d.int(100)
    if k < 82:
        return draw_frame(d, draw_query(d), response=False)
    if k < 89:                                              # answers sent as queries
        return draw_frame(d, draw_response(d), response=False)
    if k < 95:                                              # a valid header, random payload
        return draw_frame(d, d.bytes(d.int(300)), response=False)
    return d.bytes(MIN_FRAME + d.int(400))                  # random bytes


def draw_tc_input(d: Dice) -> bytes:
    k = d.int(100)
    if k < 85:
        return draw_frame(d, draw_response(d), response=True)
    if k < 92:                                              # queries on egress
        return draw_frame(d, draw_query(d), response=False)
    if k < 96:
        return draw_frame(d, d.bytes(d.int(300)), response=True)
    return d.bytes(MIN_FRAME + d.int(400))


ENTROPY = st.binary(min_size=48, max_size=700)
xdp_inputs = ENTROPY.map(lambda b: draw_xdp_input(Dice(b)))
tc_inputs = ENTROPY.map(lambda b: draw_tc_input(Dice(b)))


# ------------------------------------------------------------------ reading frames (the reference side)

@dataclass
class FrameInfo:
    eth_dst: bytes
    eth_src: bytes
    vlans: list
    family: int
    src: str
    dst: str
    sport: int
    dport: int
    payload: bytes                   # the UDP payload, by the UDP length
    plain: bool                      # no IP options / extension headers: the fast path may answer it
    udp_csum: int
    udp_csum_ok: bool
    dns_off: int = 0                 # where the UDP payload starts in the frame


def frame_info(f: bytes) -> FrameInfo | None:
    """A frame both programs must understand: Ethernet, at most 2 VLAN tags,
    IPv4 (options allowed) or IPv6 (hop-by-hop/routing/destination options,
    at most 4), not a fragment, UDP whose length fits the IP datagram. None
    for anything else."""
    if len(f) < 14:
        return None
    off, vlans = 12, []
    proto, = struct.unpack_from("!H", f, off)
    off += 2
    while proto in (P.ETH_P_8021Q, P.ETH_P_8021AD):
        if len(vlans) == 2 or off + 4 > len(f):
            return None
        tci, nxt = struct.unpack_from("!HH", f, off)
        vlans.append((proto, tci))
        proto = nxt
        off += 4
    if proto == P.ETH_P_IP:
        if off + 20 > len(f) or f[off] >> 4 != 4 or f[off] & 0xF < 5:
            return None
        ihl = (f[off] & 0xF) * 4
        total, = struct.unpack_from("!H", f, off + 2)
        frag, = struct.unpack_from("!H", f, off + 6)
        if off + ihl > len(f) or total < ihl or frag & 0x3FFF or f[off + 9] != P.UDP:
            return None
        src, dst = str(ipaddress.ip_address(f[off + 12:off + 16])), str(ipaddress.ip_address(f[off + 16:off + 20]))
        l4, l3_end, plain = off + ihl, off + total, ihl == 20
        pseudo_addrs = f[off + 12:off + 20]
        family = 4
    elif proto == P.ETH_P_IPV6:
        if off + 40 > len(f) or f[off] >> 4 != 6:
            return None
        plen, = struct.unpack_from("!H", f, off + 4)
        nh = f[off + 6]
        src, dst = str(ipaddress.ip_address(f[off + 8:off + 24])), str(ipaddress.ip_address(f[off + 24:off + 40]))
        pseudo_addrs = f[off + 8:off + 40]
        l4, l3_end, plain = off + 40, off + 40 + plen, True
        for _ in range(4):
            if nh not in (0, 43, 60):
                break
            if l4 + 2 > len(f):
                return None
            nh, ln = f[l4], f[l4 + 1]
            l4 += (ln + 1) * 8
            plain = False
        if nh != P.UDP:
            return None
        family = 6
    else:
        return None
    if l4 > 512 or l4 + 8 > len(f):
        return None
    sport, dport, ulen, uc = struct.unpack_from("!HHHH", f, l4)
    if ulen < 8 or l4 + ulen > l3_end or l4 + ulen > len(f):
        return None
    seg = f[l4:l4 + ulen]
    if family == 4:
        pseudo = pseudo_addrs + struct.pack("!BBH", 0, P.UDP, ulen)
    else:
        pseudo = pseudo_addrs + struct.pack("!IxxxB", ulen, P.UDP)
    ok = (family == 4 and uc == 0) or P.csum(pseudo + seg) == 0
    return FrameInfo(f[:6], f[6:12], vlans, family, src, dst, sport, dport, seg[8:], plain, uc, ok, l4 + 8)


def doubtful_opt(msg: bytes, opt_at: int) -> bool:
    """The fast path leaves a query whose EDNS options run past 256 bytes to the
    resolver (it walks no further); mirrors parse_opt's walk."""
    rdlen, = struct.unpack_from("!H", msg, opt_at + 9)
    o = 0
    for _ in range(8):
        if o >= rdlen:
            return False
        if o > 256:
            return True
        p = opt_at + 11 + o
        if p + 4 > len(msg):
            return False
        o += 4 + struct.unpack_from("!H", msg, p + 2)[0]
    return False


def labels_from_wire(name: bytes) -> list[bytes]:
    out, i = [], 0
    while name[i]:
        out.append(name[i + 1:i + 1 + name[i]].lower())
        i += 1 + name[i]
    return out


def rr_a(addr: str, ttl: int = 300) -> bytes:
    a = ipaddress.ip_address(addr)
    return b"\xc0\x0c" + struct.pack("!HHIH", 1 if a.version == 4 else 28, 1, ttl, len(a.packed)) + a.packed


def has_addr_for(rule: Rule, qtype: int) -> bool:
    """The rule has an address for this query type (A: IPv4, AAAA: IPv6, ANY: either)."""
    return {1: bool(rule.addr(4)), 28: bool(rule.addr(6)), 255: bool(rule.addr(4) or rule.addr(6))}.get(qtype, False)


def synth_records(rule: Rule, qtype: int) -> tuple[bytes, tuple[int, int, int]]:
    """A synthesized answer's records: the rule's address for A/AAAA (ANY: IPv4
    first), none (NODATA) when it has none for the type."""
    if not has_addr_for(rule, qtype):
        return b"", (0, 0, 0)
    packed = rule.addr(6) if qtype == 28 or (qtype == 255 and not rule.addr(4)) else rule.addr(4)
    return rr_a(str(ipaddress.ip_address(packed)), SYNTH_TTL), (1, 0, 0)


def resolver_answer(query: bytes) -> bytes | None:
    """What a resolver would answer to query's question: one address record
    (AAAA for an AAAA question, else A)."""
    try:
        q = W.question_bytes(query)
    except W.Bad:
        return None
    qid, = struct.unpack_from("!H", query, 0)
    qtype, = struct.unpack_from("!H", q, len(q) - 4)
    addr = "2001:db8:19::200" if qtype == 28 else "198.19.200.1"
    return struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + q + rr_a(addr)


class Failure(AssertionError):
    pass


def _fail(msg: str, **ctx) -> None:
    raise Failure(msg + "".join(f"\n  {k}: {v.hex() if isinstance(v, bytes) else v}" for k, v in ctx.items()))


class Harness:
    """Runs packets through the loaded programs and judges each result."""

    BOUNDED = ("nexus_cache", "nexus_ratelimit", "nexus_inflight", "nexus_pol_verify")

    def __init__(self, lo, rules: list[Rule]):
        from nexusctl.tools import libbpf as L
        self.lo = lo
        self.rules = rules
        enum = lo.btf.enum("nexus_counter")
        self.names = {v: n.removeprefix("NEXUS_CNT_").lower() for n, v in enum.items() if not n.endswith("__MAX")}
        self.cnt_map = L.MapHandle.pinned(str(lo.pin_dir / "maps" / "nexus_counters"))
        self.maps = {n: L.MapHandle.pinned(str(lo.pin_dir / "maps" / n)) for n in self.BOUNDED}
        self.last = self.read_counters()
        # cache key → (answer TC cached, its walk, fill time ns, dnspython parses it)
        self.model: dict[tuple, tuple[bytes, W.Walk, int, bool]] = {}
        self.runs = {XDP: 0, TC: 0}
        self.verdicts: dict[tuple[str, int], int] = {}
        self.paths: dict[str, int] = {}
        self.probe_n = 0

    def close(self):
        self.cnt_map.close()
        for m in self.maps.values():
            m.close()

    # -------------------------------------------------------------- invariants after every run
    def read_counters(self) -> dict[str, int]:
        out = {}
        for i, name in self.names.items():
            vals = self.cnt_map.lookup(struct.pack("<I", i))
            out[name] = sum(int.from_bytes(v, "little") for v in vals)
        return out

    def delta(self) -> dict[str, int]:
        now = self.read_counters()
        d = {}
        for k, v in now.items():
            if v < self.last[k]:
                _fail(f"counter {k} went backwards: {self.last[k]} → {v}")
            d[k] = v - self.last[k]
        self.last = now
        return d

    def check_bounds(self) -> None:
        for name, m in self.maps.items():
            n = m.count(limit=m.info["max_entries"] + 10)
            if n > m.info["max_entries"]:
                _fail(f"map {name} holds {n} entries, more than its max_entries {m.info['max_entries']}")

    def run(self, prog: str, f: bytes):
        res = self.lo.run(prog, f)
        self.runs[prog] += 1
        self.verdicts[(prog, res.retval)] = self.verdicts.get((prog, res.retval), 0) + 1
        return res, self.delta()

    def path(self, name: str) -> None:
        self.paths[name] = self.paths.get(name, 0) + 1

    # -------------------------------------------------------------- XDP
    def xdp(self, f: bytes) -> int:
        res, d = self.run(XDP, f)
        v = res.retval
        if v not in (XDP_DROP, XDP_PASS, XDP_TX):
            _fail(f"XDP verdict {v} is not DROP/PASS/TX", frame=f)
        if d["packets"] != 1:
            _fail(f"packets counter moved by {d['packets']} for one packet", frame=f)
        if v == XDP_PASS and res.data_out != f:
            _fail("XDP_PASS changed the packet", frame=f, out=res.data_out)
        fi = frame_info(f)
        qi = None
        if fi and fi.dport == 53:
            try:
                qi = W.answerable_query(fi.payload)
                if qi.has_opt and doubtful_opt(fi.payload, 12 + len(qi.question)):
                    qi = None
            except (W.Bad, struct.error):
                qi = None
        rule = None
        if fi and fi.dport == 53:
            try:
                rule = decide(self.rules, labels_from_wire(W.question_bytes(fi.payload)[:-4]))
            except (W.Bad, IndexError):
                rule = None
        # the policy ran when the query was counted, not limited, not malformed,
        # and not passed as doubtful before the lookup (a "too big for the client"
        # doubt comes after it, with a cache miss)
        early_doubt = d["pass_doubt"] and not d["cache_misses"]
        if d["queries"] and not (d["rate_limited"] or d["malformed"] or early_doubt):
            if not (qi and fi.plain):
                _fail("the fast path took for a plain query what the reference does not", frame=f)
            self._check_policy_decision(f, d, rule, qi, v)
        elif qi and fi.plain and not d["rate_limited"]:
            _fail(f"a plain, well-formed query was not looked up ({d})", frame=f)
        if v == XDP_TX:
            if not (fi and fi.plain and qi):
                _fail("XDP_TX for a packet that is not a plain, well-formed query", frame=f, out=res.data_out)
            self._check_answer(f, fi, qi, d, rule, res.data_out)
        elif v == XDP_PASS and rule and rule.action in ("block", "synthesize", "redirect") and fi:
            self._resolver_answer_through_tc(f, fi, rule)
        self.check_bounds()
        return v

    def _check_policy_decision(self, f, d, rule, qi, v) -> None:
        got = ("block" if d["policy_blocked"] else "synthesize" if d["policy_synthesized"] else
               "allow" if d["policy_allowed"] else "redirect" if d["policy_redirected"] else None)
        want = rule.action if rule else None
        if want == "redirect":
            # answered in XDP (NODATA, or the address for ANY) only when the
            # resolver's answer could not be rewritten; else it goes on to it
            nodata = qi.qtype in (1, 28) and not has_addr_for(rule, qi.qtype)
            want = "redirect" if nodata or qi.qtype == 255 else None
        if got != want:
            _fail(f"policy: the kernel decided {got}, the contract says {want} "
                  f"(rule {rule.pattern if rule else None})", frame=f)

    def _check_answer(self, f, fi, qi, d, rule, out) -> None:
        of = frame_info(out)
        if of is None or not of.plain:
            _fail("XDP_TX output is not a well-formed UDP frame", frame=f, out=out)
        if (of.eth_dst, of.eth_src) != (fi.eth_src, fi.eth_dst) or of.vlans != fi.vlans:
            _fail("XDP_TX output: Ethernet/VLAN not turned around", frame=f, out=out)
        if (of.src, of.dst, of.sport, of.dport) != (fi.dst, fi.src, fi.dport, fi.sport):
            _fail("XDP_TX output: addresses/ports not swapped", frame=f, out=out)
        p = P.parse(out)
        if not (p.ip_csum_ok and p.udp_csum_ok and p.udp_csum != 0):
            _fail("XDP_TX output: bad IP or UDP checksum", frame=f, out=out)
        l2 = 14 + 4 * len(of.vlans)
        if len(out) != l2 + p.ip_total_len or p.udp_len != 8 + len(of.payload):
            _fail("XDP_TX output: frame, IP and UDP lengths disagree", frame=f, out=out)
        ans = of.payload
        if len(ans) > qi.udp_size:
            _fail(f"answer of {len(ans)} bytes to a client that takes {qi.udp_size}", frame=f, out=out)
        if d["rate_limit_slipped"]:
            kind, want, ttls = "slip", W.expected_answer(qi, W.RA | W.TC, b"", (0, 0, 0)), []
        elif d["blocked"]:
            kind, want, ttls = "block", W.expected_answer(qi, W.RA | 3, b"", (0, 0, 0)), []
        elif d["policy_synthesized"] or d["policy_redirected"]:
            recs, counts = synth_records(rule, qi.qtype)
            kind, want = "synth", W.expected_answer(qi, W.AA | W.RA, recs, counts)
            ttls = [(12 + len(qi.question) + 6, SYNTH_TTL, 0)] if recs else []
        elif d["cache_hits"]:
            kind = "cache"
            entry = self.model.get(W.cache_key(qi))
            if entry is None:
                _fail("answered from a cache entry no TC run made for this question", frame=f, out=out)
            want, ttls = self._from_cache(qi, *entry[:3])
        else:
            _fail(f"XDP_TX without a counter saying why: {d}", frame=f, out=out)
        self.path(kind)
        got = bytearray(ans)
        for off, orig, slack in ttls:
            if off + 4 > len(got):
                _fail("answer shorter than expected", frame=f, out=out, want=want)
            t, = struct.unpack_from("!I", got, off)
            if not (max(0, orig - slack) <= t <= orig):
                _fail(f"TTL {t} at {off}: expected {orig} aged by at most {slack}s", frame=f, out=out)
            struct.pack_into("!I", got, off, orig)
        if bytes(got) != want:
            _fail(f"XDP_TX {kind} answer differs from the expected one", frame=f, out=out, want=want)
        parse_ok = kind != "cache" or self.model[W.cache_key(qi)][3]
        try:
            msg = dns.message.from_wire(ans)
        except dns.exception.DNSException as e:
            if parse_ok:
                _fail(f"dnspython cannot parse the XDP answer: {e}", frame=f, out=out)
            return
        if msg.id != qi.id or not msg.flags & 0x8000:
            _fail("answer ID/QR wrong", frame=f, out=out)

    def _from_cache(self, qi, resp: bytes, w: W.Walk, t_fill: int):
        stop = w.opt.start if w.opt else w.end
        recs = resp[w.q_end:stop]
        an, ns, ar = w.hdr.an, w.hdr.ns, w.hdr.ar - (1 if w.opt else 0)
        rflags = w.hdr.flags & (W.AA | W.RA | W.AD | W.RCODE)
        want = W.expected_answer(qi, rflags, recs, (an, ns, ar))
        base = 12 + len(qi.question)
        slack = (time.monotonic_ns() - t_fill) // 1_000_000_000 + 1
        ttls = [(base + r.ttl_off - w.q_end, r.ttl, slack) for r in w.records if r is not w.opt]
        return want, ttls

    def _resolver_answer_through_tc(self, f, fi, rule) -> None:
        """A query the policy decides went on to the resolver: its answer must not
        get out as the resolver gave it (dropped at TC egress for block and
        synthesize, addresses rewritten for redirect)."""
        ans = resolver_answer(fi.payload)
        if ans is None:
            return
        self.path("policy-through-tc")
        rf = response_frame(ans, fi.family, dst=fi.src, dport=fi.sport)
        self.tc(rf)

    # -------------------------------------------------------------- TC
    def tc(self, f: bytes) -> int | None:
        t_fill = time.monotonic_ns()
        try:
            res, d = self.run(TC, f)
        except OSError as e:
            # BPF_PROG_TEST_RUN builds no skb from a frame shorter than its
            # network header (EINVAL); the stack never sends one either
            if e.errno == 22 and len(f) < 14 + 40:
                self.last = self.read_counters()
                return None
            raise
        v = res.retval
        if d["tc_packets"] != 1:
            _fail(f"tc_packets moved by {d['tc_packets']} for one packet", frame=f)
        if v not in (TC_OK, TC_SHOT):
            _fail(f"TC verdict {v} is not OK/SHOT", frame=f)
        fi = frame_info(f)
        is_resp = bool(fi and fi.sport == 53 and len(fi.payload) >= 12 and fi.payload[2] & 0x80)
        rule = None
        if is_resp:
            try:
                # the program reads the question up to the end of the frame, not of the message
                rule = decide(self.rules, labels_from_wire(W.question_bytes(f[fi.dns_off:])[:-4]))
            except (W.Bad, IndexError):
                rule = None
            if W.header(fi.payload).qd != 1:
                rule = None
        forbidden = rule is not None and rule.action in ("block", "synthesize")
        if v == TC_SHOT and not forbidden and not (rule and rule.action == "redirect"):
            _fail("TC dropped a packet no policy forbids", frame=f)
        if v == TC_OK and forbidden:
            _fail(f"TC let out the resolver's answer for {rule.pattern} ({rule.action})", frame=f)
        if v == TC_OK:
            if rule and rule.action == "redirect":
                self._check_redirect(f, fi, rule, res.data_out)
            elif res.data_out != f:
                _fail("TC changed a packet it had no reason to touch", frame=f, out=res.data_out)
        if d["cache_inserts"]:
            self._check_insert(f, fi, rule, t_fill)
        self.check_bounds()
        return v

    def _check_redirect(self, f, fi, rule, out) -> None:
        self.path("redirect-rewrite")
        of = frame_info(out)
        if of is None or len(out) != len(f):
            _fail("redirect rewrite broke the frame", frame=f, out=out)
        if fi.udp_csum_ok and not of.udp_csum_ok:
            _fail("redirect rewrite left a wrong UDP checksum", frame=f, out=out)
        if fi.udp_csum == 0 and of.udp_csum != 0:
            _fail("redirect rewrite set a checksum the sender left out", frame=f, out=out)
        try:
            w = W.walk(of.payload)
        except (W.Bad, struct.error):
            return                                    # not a well-formed answer: what it carries is noise
        allowed = set()
        for r in w.records[:w.hdr.an]:
            if r.type in (1, 28):
                data = of.payload[r.rdata_off:r.end]
                if data != rule.addr(4 if r.type == 1 else 6):
                    _fail(f"redirect: an answer record still carries {data.hex()} (rule wants {rule.to})",
                          frame=f, out=out)
                allowed.update(range(r.rdata_off, r.end))
        for i, (x, y) in enumerate(zip(f, out)):
            if x != y:
                udp_csum_at = of.dns_off - 2
                if i - of.dns_off not in allowed and i not in (udp_csum_at, udp_csum_at + 1):
                    _fail(f"redirect rewrite changed byte {i} outside the address data", frame=f, out=out)

    def _check_insert(self, f, fi, rule, t_fill) -> None:
        """TC cached this answer: it must be a complete, consistent, cacheable one;
        XDP then serves exactly its records to the same question."""
        self.path("cache-insert")
        if fi is None or fi.sport != 53:
            _fail("cached a packet that is not a DNS answer", frame=f)
        msg = fi.payload
        try:
            w = W.walk(msg, max_records=17)
        except (W.Bad, struct.error) as e:
            _fail(f"cached an answer the reference cannot walk: {e}", frame=f)
        h = w.hdr
        if w.end != len(msg):
            _fail("cached an answer with bytes after its records", frame=f)
        if not h.flags & W.QR or h.flags & (W.OPCODE | W.TC) or h.flags & W.RCODE not in (0, 3):
            _fail(f"cached an answer with flags {h.flags:#06x}", frame=f)
        opts = [r for r in w.records if r.type == W.TYPE_OPT]
        if opts:
            if len(opts) > 1 or w.records[-1] is not opts[0] or len(w.records) - 1 < h.an + h.ns:
                _fail("cached an answer whose OPT is not the last additional record", frame=f)
            w.opt = opts[0]
        plain = [r for r in w.records if r is not w.opt]
        if not plain or len(plain) > 16:
            _fail(f"cached an answer with {len(plain)} records", frame=f)
        if min(r.ttl for r in plain) == 0:
            _fail("cached an answer with a zero TTL", frame=f)
        if rule and rule.action in ("redirect", "block", "synthesize"):
            _fail(f"cached an answer for {rule.pattern} ({rule.action})", frame=f)
        name_end = W.strict_name_end(msg, 12)
        if name_end - 12 > 128:
            _fail("cached an answer whose name is longer than a cache key", frame=f)
        do = bool(w.opt and msg[w.opt.ttl_off + 2] & 0x80)
        key = (bytes(c + 32 if 65 <= c <= 90 else c for c in msg[12:name_end]), w.qtype, w.qclass, do)
        try:
            dns.message.from_wire(msg)
            parsed = msg
        except dns.exception.DNSException:
            parsed = None
        self.model[key] = (msg, w, t_fill, parsed is not None)
        # ask for it at once, from a client of its own (a fresh rate-limit bucket)
        self.probe_n += 1
        qflags = 0x0100
        q = query_wire(0x7000 + self.probe_n % 4096, qflags, key[0], w.qtype, w.qclass,
                       opt=opt_rr(4096, do))
        src = str(ipaddress.IPv4Address(0xC6130000 + self.probe_n % 65536))
        pf = plain_frame(q, 4, src=src, sport=41000)
        res, d = self.run(XDP, pf)
        if d["suspicious"] and d["blocked"]:
            return                                    # the DGA check comes before the cache (block mode)
        if res.retval != XDP_TX or not d["cache_hits"]:
            _fail(f"a fresh cache entry is not served (verdict {res.retval}, {d})", frame=f, probe=pf)
        qi = W.answerable_query(q)
        want, ttls = self._from_cache(qi, msg, w, t_fill)
        got = bytearray(frame_info(res.data_out).payload)
        for off, orig, slack in ttls:
            t, = struct.unpack_from("!I", got, off)
            if not (max(0, orig - slack) <= t <= orig):
                _fail(f"served TTL {t}, cached {orig}", frame=f, out=res.data_out)
            struct.pack_into("!I", got, off, orig)
        if bytes(got) != want:
            _fail("XDP served a cache entry that differs from the answer TC cached", frame=f,
                  out=res.data_out, want=want)
        if parsed is not None:
            try:
                dns.message.from_wire(bytes(frame_info(res.data_out).payload))
            except dns.exception.DNSException as e:
                _fail(f"dnspython parses the resolver's answer but not the cached replay: {e}", frame=f,
                      out=res.data_out)
        self.path("cache-replayed")
