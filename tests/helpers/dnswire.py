"""A small, strict DNS wire walker written independently of the C programs,
used as the fuzzers' reference: where a question ends, where records are and
where their TTLs sit, whether a query is one the fast path may answer. It
never trusts counts or lengths without checking them against the bytes."""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

QR, OPCODE, AA, TC, RD, RA, AD, CD, RCODE = 0x8000, 0x7800, 0x0400, 0x0200, 0x0100, 0x0080, 0x0020, 0x0010, 0x000F
TYPE_OPT = 41
ECS = 8
MAX_NAME = 255


class Bad(ValueError):
    pass


def strict_name_end(msg: bytes, off: int) -> int:
    """End of an uncompressed name (a question's): labels <= 63, <= 255 bytes."""
    start = off
    while True:
        if off >= len(msg):
            raise Bad("name runs off the message")
        n = msg[off]
        if n == 0:
            off += 1
            if off - start > MAX_NAME:
                raise Bad("name over 255")
            return off
        if n & 0xC0:
            raise Bad("pointer or reserved label type in a question")
        off += 1 + n
        if off - start > MAX_NAME:
            raise Bad("name over 255")


def rr_name_end(msg: bytes, off: int) -> int:
    """End of a record's owner name in place (labels, possibly ending in a pointer)."""
    for _ in range(128):
        if off >= len(msg):
            raise Bad("name runs off the message")
        n = msg[off]
        if n == 0:
            return off + 1
        if n & 0xC0 == 0xC0:
            if off + 2 > len(msg):
                raise Bad("pointer runs off the message")
            return off + 2
        if n & 0xC0:
            raise Bad("reserved label type")
        off += 1 + n
    raise Bad("too many labels")


@dataclass
class Header:
    id: int
    flags: int
    qd: int
    an: int
    ns: int
    ar: int


def header(msg: bytes) -> Header:
    if len(msg) < 12:
        raise Bad("short header")
    return Header(*struct.unpack_from("!HHHHHH", msg, 0))


@dataclass
class Record:
    start: int
    type: int
    ttl_off: int
    ttl: int
    rdata_off: int
    rdlen: int
    end: int


@dataclass
class Walk:
    hdr: Header
    q_end: int                      # end of the question (name + type + class)
    qtype: int
    qclass: int
    records: list[Record] = field(default_factory=list)
    opt: Record | None = None


def walk(msg: bytes, *, max_records: int = 1 << 16) -> Walk:
    """Question (exactly one) and every record; raises Bad on any inconsistency."""
    h = header(msg)
    if h.qd != 1:
        raise Bad("qdcount != 1")
    q_end = strict_name_end(msg, 12)
    if q_end + 4 > len(msg):
        raise Bad("question runs off the message")
    qtype, qclass = struct.unpack_from("!HH", msg, q_end)
    w = Walk(h, q_end + 4, qtype, qclass)
    off = w.q_end
    n = h.an + h.ns + h.ar
    if n > max_records:
        raise Bad("too many records")
    for _ in range(n):
        start = off
        off = rr_name_end(msg, off)
        if off + 10 > len(msg):
            raise Bad("record header runs off the message")
        rtype, _cls, ttl, rdlen = struct.unpack_from("!HHIH", msg, off)
        rec = Record(start, rtype, off + 4, ttl, off + 10, rdlen, off + 10 + rdlen)
        if rec.end > len(msg):
            raise Bad("rdata runs off the message")
        w.records.append(rec)
        off = rec.end
    w.end = off
    return w


def question_bytes(msg: bytes) -> bytes:
    end = strict_name_end(msg, 12) + 4
    if end > len(msg):
        raise Bad("question runs off the message")
    return msg[12:end]


@dataclass
class QueryInfo:
    """What the fast path may rely on in a query it answers."""
    id: int
    flags: int
    question: bytes                 # wire bytes, case as sent
    qname_lower: bytes              # wire form, ASCII lower-cased
    qtype: int
    qclass: int
    has_opt: bool
    do: bool
    udp_size: int
    has_ecs: bool


def answerable_query(msg: bytes) -> QueryInfo:
    """A plain query the fast path may answer itself, or Bad: opcode QUERY, QR
    clear, one question, no answer/authority records, at most one additional
    record which must be an OPT with a root owner, and nothing after it."""
    h = header(msg)
    if h.flags & QR or h.flags & OPCODE:
        raise Bad("not a plain query")
    if h.qd != 1 or h.an or h.ns or h.ar > 1:
        raise Bad("section counts")
    q = question_bytes(msg)
    end = 12 + len(q)
    qtype, qclass = struct.unpack_from("!HH", q, len(q) - 4)
    has_opt = do = has_ecs = False
    udp = 512
    if h.ar:
        if end + 11 > len(msg) or msg[end] != 0:
            raise Bad("additional record is not an OPT")
        rtype, cls, ttl, rdlen = struct.unpack_from("!HHIH", msg, end + 1)
        if rtype != TYPE_OPT:
            raise Bad("additional record is not an OPT")
        has_opt = True
        do = bool(ttl & 0x8000)
        udp = max(512, cls)
        o, stop = end + 11, end + 11 + rdlen
        if stop > len(msg):
            raise Bad("OPT runs off the message")
        while o < stop:
            if o + 4 > stop:
                break
            code, olen = struct.unpack_from("!HH", msg, o)
            if code == ECS:
                has_ecs = True
            o += 4 + olen
        end = stop
    if end != len(msg):
        raise Bad("trailing bytes")
    name = q[:-4]
    lower = bytes(c + 32 if 65 <= c <= 90 else c for c in name)
    return QueryInfo(h.id, h.flags, q, lower, qtype, qclass, has_opt, do, udp, has_ecs)


def cache_key(qi: QueryInfo) -> tuple:
    return (qi.qname_lower, qi.qtype, qi.qclass, qi.do)


def expected_answer(qi: QueryInfo, rflags: int, records: bytes, counts: tuple[int, int, int],
                    edns_size: int = 1232) -> bytes:
    """The answer the fast path builds: the query's ID and question bytes, the
    given records (TTLs as given), an OPT record exactly when the query had one."""
    qflags = qi.flags & (RD | CD)
    flags = QR | qflags | (rflags & (AA | TC | RA | RCODE))
    if rflags & AD and (qi.flags & AD or qi.do):
        flags |= AD
    an, ns, ar = counts
    out = struct.pack("!HHHHHH", qi.id, flags, 1, an, ns, ar + (1 if qi.has_opt else 0))
    out += qi.question + records
    if qi.has_opt:
        out += b"\0" + struct.pack("!HHIH", TYPE_OPT, edns_size, 0x8000 if qi.do else 0, 0)
    return out
