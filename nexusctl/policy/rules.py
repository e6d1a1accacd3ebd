"""Rules as user space keeps them: patterns, actions, addresses, query types,
and how they become kernel keys and values (struct nexus_policy_val)."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

import dns.rdatatype

from nexusctl.config.model import validate_pattern

ACTIONS = {"block": 1, "redirect": 2, "synthesize": 3, "allow": 4}
ACTION_NAMES = {v: k for k, v in ACTIONS.items()}
BLOCK_KINDS = {None: 0, "default": 0, "nxdomain": 1, "nodata": 2, "refused": 3, "drop": 4}
# bit per query type, as qtype_bit() in bpf/include/policy.h; every other type is bit 15
QTYPE_BITS = {"A": 0, "NS": 1, "CNAME": 2, "SOA": 3, "PTR": 4, "MX": 5, "TXT": 6, "AAAA": 7, "SRV": 8,
              "DS": 9, "DNSKEY": 10, "SVCB": 11, "HTTPS": 12, "CAA": 13, "ANY": 14}
OTHER_QTYPE_BIT = 15
ALL_QTYPES = 0xFFFF
PREFIX_MAX = 64                 # NEXUS_PREFIX_MAX: longer prefix patterns are refused
EXACT, WILDCARD, PREFIX = "exact", "wildcard", "prefix"
LABEL_RE = re.compile(rb"^[a-z0-9_-]{1,63}$")


class PatternError(ValueError):
    pass


def pattern_kind(pattern: str) -> tuple[str, str]:
    """("exact"|"wildcard"|"prefix", body): body is the name, the suffix, or the prefix text."""
    p = validate_pattern(pattern)
    if p.startswith("*."):
        return WILDCARD, p[2:]
    if p.endswith("*"):
        body = p[:-1]
        if len(body) > PREFIX_MAX:
            raise PatternError(f"{p!r}: prefix patterns are limited to {PREFIX_MAX} characters")
        if not body:
            raise PatternError("'*' alone would match every name; use a block on the resolver instead")
        return PREFIX, body
    return EXACT, p


def qtype_mask(qtypes) -> int:
    if not qtypes:
        return ALL_QTYPES
    mask = 0
    for t in qtypes:
        name = dns.rdatatype.to_text(dns.rdatatype.from_text(str(t).upper()))
        mask |= 1 << QTYPE_BITS.get(name, OTHER_QTYPE_BIT)
    return mask


@dataclass(frozen=True)
class Attrs:
    """What a rule does; shared by every pattern of a group (a blocklist is one group)."""
    action: str
    priority: int = 100
    to4: str | None = None
    to6: str | None = None
    qtypes: tuple[str, ...] = ()
    block: str | None = None            # nxdomain | nodata | refused | drop (None: config's block_response)

    @classmethod
    def make(cls, action: str, priority: int = 100, to: str | list | None = None, qtypes=(), block=None) -> "Attrs":
        if action not in ACTIONS:
            raise PatternError(f"unknown action {action!r} (block, redirect, synthesize, allow)")
        to4 = to6 = None
        for a in ([to] if isinstance(to, str) else (to or [])):
            ip = ipaddress.ip_address(a)
            if ip.version == 4:
                to4 = str(ip)
            else:
                to6 = str(ip)
        if action in ("redirect", "synthesize") and not (to4 or to6):
            raise PatternError(f"action {action} needs an address (--to)")
        if action in ("block", "allow") and (to4 or to6):
            raise PatternError(f"action {action} takes no address")
        if block not in BLOCK_KINDS:
            raise PatternError(f"unknown block response {block!r}")
        return cls(action, int(priority), to4, to6, tuple(qtypes or ()), block)

    @property
    def to(self) -> str | None:
        return self.to4 if not self.to6 else (self.to6 if not self.to4 else f"{self.to4},{self.to6}")

    def value(self, layout, pat_len: int, rule_id: int = 0) -> bytes:
        return layout.pack({
            "priority": self.priority, "pat_len": pat_len, "qtypes": qtype_mask(self.qtypes),
            "action": ACTIONS[self.action], "block": BLOCK_KINDS[self.block],
            "has4": int(bool(self.to4)), "has6": int(bool(self.to6)),
            "addr4": ipaddress.ip_address(self.to4).packed if self.to4 else b"",
            "addr6": ipaddress.ip_address(self.to6).packed if self.to6 else b"",
            "rule_id": rule_id,
        })

    def to_json(self) -> dict:
        out = {"action": self.action, "to": self.to, "qtypes": list(self.qtypes), "priority": self.priority}
        if self.block:
            out["response"] = self.block
        return out

    def better_than(self, other: "Attrs", my_len: int, other_len: int) -> bool:
        """The contract's precedence: lower priority, then longer pattern, then allow."""
        if self.priority != other.priority:
            return self.priority < other.priority
        if my_len != other_len:
            return my_len > other_len
        return self.action == "allow" and other.action != "allow"


@dataclass
class Group:
    """Patterns sharing one Attrs, from one source."""
    attrs: Attrs
    patterns: list[str] = field(default_factory=list)
    lines: list[int] | None = None      # file lines, for imports (error reporting)


def rule_json(pattern: str, attrs: Attrs, source: str) -> dict:
    return {"pattern": pattern, **attrs.to_json(), "source": source}
