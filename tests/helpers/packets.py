"""Build and parse Ethernet/VLAN/IPv4/IPv6/UDP frames around DNS messages
(dnspython builds the DNS part), with real checksums, for BPF_PROG_TEST_RUN."""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

import dns.edns
import dns.flags
import dns.message
import dns.rdatatype
import dns.rrset

ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD, ETH_P_ARP = 0x0800, 0x86DD, 0x8100, 0x88A8, 0x0806
UDP, TCP = 17, 6
CLIENT_MAC = bytes.fromhex("020000000002")
SERVER_MAC = bytes.fromhex("020000000001")
CLIENT4, SERVER4 = "198.18.0.2", "198.18.0.1"
CLIENT6, SERVER6 = "2001:db8:18::2", "2001:db8:18::1"


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def _addr(a: str) -> bytes:
    return ipaddress.ip_address(a).packed


def udp_segment(src: str, dst: str, sport: int, dport: int, payload: bytes, *, length: int | None = None,
                checksum: bool = True) -> bytes:
    ulen = 8 + len(payload) if length is None else length
    hdr = struct.pack("!HHHH", sport, dport, ulen, 0)
    if not checksum:
        return hdr + payload
    s, d = _addr(src), _addr(dst)
    if len(s) == 4:
        pseudo = s + d + struct.pack("!BBH", 0, UDP, 8 + len(payload))
    else:
        pseudo = s + d + struct.pack("!IxxxB", 8 + len(payload), UDP)
    c = csum(pseudo + hdr + payload)
    if c == 0:
        c = 0xFFFF
    return struct.pack("!HHHH", sport, dport, ulen, c) + payload


def ipv4(src: str, dst: str, proto: int, payload: bytes, *, ttl: int = 64, options: bytes = b"",
         frag: int = 0, ident: int = 0x1234, tot_len: int | None = None) -> bytes:
    assert len(options) % 4 == 0
    ihl = 5 + len(options) // 4
    total = ihl * 4 + len(payload) if tot_len is None else tot_len
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, ident, frag, ttl, proto, 0, _addr(src), _addr(dst))
    hdr += options
    c = csum(hdr)
    hdr = hdr[:10] + struct.pack("!H", c) + hdr[12:]
    return hdr + payload


def ipv6(src: str, dst: str, nexthdr: int, payload: bytes, *, hlim: int = 64, ext: bytes = b"",
         first_nh: int | None = None) -> bytes:
    """ext: already-encoded extension headers; first_nh: next header of the fixed header then."""
    nh = nexthdr if first_nh is None else first_nh
    body = ext + payload
    return struct.pack("!IHBB16s16s", 6 << 28, len(body), nh, hlim, _addr(src), _addr(dst)) + body


def ext_hdr(nexthdr: int, length8: int = 0, fill: bytes | None = None) -> bytes:
    """A hop-by-hop/destination-options-shaped header of (length8+1)*8 bytes (PadN filled)."""
    size = (length8 + 1) * 8
    body = fill if fill is not None else bytes([1, size - 4]) + bytes(size - 4)
    return bytes([nexthdr, length8]) + body[: size - 2]


def frag_hdr(nexthdr: int, offset8: int = 0, more: bool = False, ident: int = 7) -> bytes:
    return struct.pack("!BBHI", nexthdr, 0, (offset8 << 3) | int(more), ident)


def ether(payload: bytes, proto: int, *, src: bytes = CLIENT_MAC, dst: bytes = SERVER_MAC,
          vlans: list[tuple[int, int]] = ()) -> bytes:
    """vlans: [(tpid, vid), ...] outermost first."""
    out = dst + src
    for tpid, vid in vlans:
        out += struct.pack("!HH", tpid, vid)
    return out + struct.pack("!H", proto) + payload


def dns_query(name: str, qtype: str = "A", *, qid: int = 0x4242, edns: bool = False, payload: int = 1232,
              do: bool = False, rd: bool = True, ecs: str | None = None) -> bytes:
    opts = []
    if ecs:
        opts.append(dns.edns.ECSOption.from_text(ecs))
    if edns or do or ecs:
        q = dns.message.make_query(name, qtype, use_edns=0, payload=payload, want_dnssec=do,
                                   options=opts or None)
    else:
        q = dns.message.make_query(name, qtype, use_edns=False)
    q.id = qid
    if not rd:
        q.flags &= ~dns.flags.RD
    return q.to_wire()


@dataclass
class Frame:
    family: int
    src: str
    dst: str
    sport: int
    dport: int
    payload: bytes
    ttl: int = 64
    vlans: list = field(default_factory=list)
    eth_src: bytes = CLIENT_MAC
    eth_dst: bytes = SERVER_MAC


def build(f: Frame, *, ip_options: bytes = b"", ext: bytes = b"", ext_first: int | None = None,
          udp_checksum: bool = True) -> bytes:
    seg = udp_segment(f.src, f.dst, f.sport, f.dport, f.payload, checksum=udp_checksum)
    if f.family == 4:
        l3 = ipv4(f.src, f.dst, UDP, seg, ttl=f.ttl, options=ip_options)
        proto = ETH_P_IP
    else:
        l3 = ipv6(f.src, f.dst, UDP, seg, hlim=f.ttl, ext=ext, first_nh=ext_first)
        proto = ETH_P_IPV6
    return ether(l3, proto, src=f.eth_src, dst=f.eth_dst, vlans=f.vlans)


def query_frame(name: str, qtype: str = "A", *, family: int = 4, sport: int = 33333, dport: int = 53,
                vlans=(), **dnskw) -> bytes:
    src, dst = (CLIENT4, SERVER4) if family == 4 else (CLIENT6, SERVER6)
    return build(Frame(family, src, dst, sport, dport, dns_query(name, qtype, **dnskw), vlans=list(vlans)))


def response_frame(query_wire: bytes, answers: list[str] = (), *, family: int = 4, rcode: int = 0,
                   sport: int = 53, dport: int = 33333, vlans=(), ttl: int = 300, mutate=None) -> bytes:
    """A resolver's answer to query_wire, as it leaves the server (TC egress sees this)."""
    q = dns.message.from_wire(query_wire)
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    qname = q.question[0].name
    qtype = q.question[0].rdtype
    for a in answers:
        r.answer.append(dns.rrset.from_text(qname, ttl, "IN", dns.rdatatype.to_text(qtype), a))
    if mutate:
        mutate(r)
    wire = r.to_wire()
    src, dst = (SERVER4, CLIENT4) if family == 4 else (SERVER6, CLIENT6)
    return build(Frame(family, src, dst, sport, dport, wire, vlans=list(vlans), eth_src=SERVER_MAC,
                       eth_dst=CLIENT_MAC))


@dataclass
class Parsed:
    eth_dst: bytes
    eth_src: bytes
    vlans: list
    family: int
    src: str
    dst: str
    ttl: int
    sport: int
    dport: int
    udp_len: int
    udp_csum: int
    payload: bytes
    ip_header: bytes
    l4: bytes
    ip_csum_ok: bool
    udp_csum_ok: bool
    ip_total_len: int


def parse(frame: bytes) -> Parsed:
    dst, src = frame[:6], frame[6:12]
    off = 12
    vlans = []
    proto, = struct.unpack_from("!H", frame, off)
    off += 2
    while proto in (ETH_P_8021Q, ETH_P_8021AD):
        vid, nxt = struct.unpack_from("!HH", frame, off)
        vlans.append((proto, vid))
        proto = nxt
        off += 4
    if proto == ETH_P_IP:
        ihl = (frame[off] & 0xF) * 4
        iph = frame[off:off + ihl]
        total, = struct.unpack_from("!H", iph, 2)
        ttl = iph[8]
        s, d = str(ipaddress.ip_address(iph[12:16])), str(ipaddress.ip_address(iph[16:20]))
        ip_ok = csum(iph) == 0
        l4 = frame[off + ihl: off + total]
        family = 4
        pseudo = iph[12:20] + struct.pack("!BBH", 0, UDP, len(l4))
    else:
        iph = frame[off:off + 40]
        plen, = struct.unpack_from("!H", iph, 4)
        ttl = iph[7]
        s, d = str(ipaddress.ip_address(iph[8:24])), str(ipaddress.ip_address(iph[24:40]))
        ip_ok = True
        l4 = frame[off + 40: off + 40 + plen]
        total = 40 + plen
        family = 6
        pseudo = iph[8:40] + struct.pack("!IxxxB", len(l4), UDP)
    sport, dport, ulen, uc = struct.unpack_from("!HHHH", l4, 0)
    if family == 4 and uc == 0:
        udp_ok = True            # checksum not used (IPv4 only)
    else:
        udp_ok = csum(pseudo + l4) == 0
    return Parsed(dst, src, vlans, family, s, d, ttl, sport, dport, ulen, uc, l4[8:ulen], iph, l4, ip_ok, udp_ok,
                  total)
