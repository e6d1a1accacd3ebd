"""Blocklist formats: domains, hosts, adblock, rpz.

Each parser returns rule groups and a list of problems (file:line, why). A
line it cannot use is skipped and reported; with strict=True the import stops
at the first one. Nothing is applied by a parser.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from nexusctl.config.model import validate_pattern
from nexusctl.errors import UsageError
from nexusctl.fsutil import read_input
from nexusctl.policy.rules import Attrs, Group, PatternError, pattern_kind

FORMATS = ("domains", "hosts", "adblock", "rpz")
BLOCKING_ADDRESSES = {"0.0.0.0", "127.0.0.1", "::", "::1"}
HOSTS_SKIP = {"localhost", "localhost.localdomain", "local", "broadcasthost", "ip6-localhost",
              "ip6-loopback", "ip6-localnet", "ip6-mcastprefix", "ip6-allnodes", "ip6-allrouters",
              "ip6-allhosts", "0.0.0.0"}
ADBLOCK_RULE = re.compile(r"^(@@)?\|\|([a-z0-9*_.-]+)\^(\$(.*))?$")
ADBLOCK_OK_OPTIONS = {"important", "third-party", "3p", "all", "document", "doc", "popup"}


@dataclass
class Parsed:
    groups: list[Group] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    lines: int = 0

    @property
    def count(self) -> int:
        return sum(len(g.patterns) for g in self.groups)


class _Collector:
    def __init__(self, path: str, strict: bool):
        self.path = path
        self.strict = strict
        self.out = Parsed()
        self._groups: dict[Attrs, Group] = {}

    def problem(self, line: int, why: str) -> None:
        msg = f"{self.path}:{line}: {why}"
        if self.strict:
            raise UsageError(msg, "fix the line, or import without --strict to skip bad lines")
        self.out.problems.append(msg)

    def add_many(self, attrs: Attrs, patterns: list[str], lines: list[int]) -> None:
        """Patterns already known to be plain lower-case names (no further checks)."""
        if not patterns:
            return
        g = self._groups.get(attrs)
        if g is None:
            g = self._groups[attrs] = Group(attrs, [], [])
            self.out.groups.append(g)
        g.patterns.extend(patterns)
        g.lines.extend(lines)

    def add(self, attrs: Attrs, pattern: str, line: int) -> None:
        try:
            p = validate_pattern(pattern)
            pattern_kind(p)
        except (ValueError, PatternError) as e:
            self.problem(line, str(e).removeprefix("Value error, "))
            return
        g = self._groups.get(attrs)
        if g is None:
            g = self._groups[attrs] = Group(attrs, [], [])
            self.out.groups.append(g)
        g.patterns.append(p)
        g.lines.append(line)


def _read(path: Path) -> str:
    raw = read_input(path, UsageError)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UsageError(f"{path}:{line}: not UTF-8 text", "convert the list to UTF-8") from None


# A plain name, already lower case: what nearly every line of a big list is. Lines
# that do not match go through the full check (comments, wildcards, errors).
PLAIN_NAME = re.compile(r"(?:[a-z0-9_-]{1,63}\.)*[a-z0-9_-]{1,63}")
PLAIN_MAX = 253


def parse_domains(text: str, c: _Collector, attrs: Attrs) -> None:
    fast = PLAIN_NAME.fullmatch
    lines = text.splitlines()
    good, good_lines = [], []
    for n, s in enumerate(lines, 1):
        if len(s) <= PLAIN_MAX and fast(s):
            good.append(s)
            good_lines.append(n)
            continue
        s = s.split("#", 1)[0].strip()
        if not s or s.startswith(";"):
            continue
        if len(s.split()) != 1:
            c.problem(n, f"expected one name, got {s!r}")
            continue
        low = s.lower().rstrip(".")
        if len(low) <= PLAIN_MAX and fast(low):
            good.append(low)
            good_lines.append(n)
        else:
            c.add(attrs, s, n)
    c.add_many(attrs, good, good_lines)


def parse_hosts(text: str, c: _Collector, attrs: Attrs) -> None:
    """`0.0.0.0 name [name…]` blocks; a real address synthesizes (as a hosts file would answer)."""
    for n, line in enumerate(text.splitlines(), 1):
        s = line.split("#", 1)[0].strip()
        if not s:
            continue
        parts = s.split()
        if len(parts) < 2:
            c.problem(n, f"expected `ADDRESS NAME…`, got {s!r}")
            continue
        try:
            addr = str(ipaddress.ip_address(parts[0]))
        except ValueError:
            c.problem(n, f"{parts[0]!r} is not an address")
            continue
        a = attrs if addr in BLOCKING_ADDRESSES else Attrs.make("synthesize", attrs.priority, addr, attrs.qtypes)
        for name in parts[1:]:
            if name.lower() in HOSTS_SKIP:
                continue
            c.add(a, name, n)


def parse_adblock(text: str, c: _Collector, attrs: Attrs) -> None:
    """`||name^` blocks the name and everything below it; `@@||name^` allows them."""
    allow = Attrs.make("allow", attrs.priority, None, attrs.qtypes)
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("!") or (s.startswith("[") and s.endswith("]")):
            continue
        m = ADBLOCK_RULE.match(s.lower())
        if not m:
            c.problem(n, f"not a domain rule (`||name^`): {s[:60]!r}")
            continue
        opts = {o.split("=")[0].lstrip("~") for o in (m.group(4) or "").split(",") if o}
        if opts - ADBLOCK_OK_OPTIONS:
            c.problem(n, f"options {sorted(opts - ADBLOCK_OK_OPTIONS)} only make sense in a browser")
            continue
        a = allow if m.group(1) else attrs
        name = m.group(2)
        if name.startswith("*."):
            c.add(a, name, n)
        elif "*" in name:
            c.problem(n, f"wildcards inside a name are not supported: {name!r}")
        else:
            c.add(a, name, n)
            c.add(a, f"*.{name}", n)


def parse_rpz(text: str, c: _Collector, attrs: Attrs) -> None:
    """A Response Policy Zone (QNAME triggers): CNAME . → NXDOMAIN, CNAME *. → NODATA,
    CNAME rpz-passthru. → allow, CNAME rpz-drop. → drop, A/AAAA → synthesize."""
    import dns.exception
    import dns.name
    import dns.rdataclass
    import dns.rdatatype
    import dns.zone

    try:
        try:
            zone = dns.zone.from_text(text, origin=None, relativize=True, check_origin=False)
        except dns.zone.UnknownOrigin:
            # no $ORIGIN: owners are relative to whatever the policy zone is called
            zone = dns.zone.from_text(text, origin="rpz.invalid.", relativize=True, check_origin=False)
    except dns.exception.SyntaxError as e:
        line = getattr(e, "kwargs", {}).get("line") or _line_of(str(e))
        c.problem(line or 1, f"not a zone file: {e}")
        return
    except dns.exception.DNSException as e:
        c.problem(1, f"not a zone file: {e}")
        return
    lines = _owner_lines(text)
    for name, node in zone.nodes.items():
        owner = name.to_text()
        if owner == "@":
            continue                                   # SOA, NS of the policy zone itself
        if owner.startswith("rpz-") or ".rpz-" in owner:
            c.problem(lines.get(owner, 1), f"trigger {owner!r} (IP/NS triggers) is not supported; skipped")
            continue
        pattern = owner.lower()
        line = lines.get(owner, 1)
        cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
        a = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.A)
        aaaa = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.AAAA)
        if cname:
            target = cname[0].target.to_text()
            if target in ("@", ".", ""):
                c.add(Attrs.make("block", attrs.priority, None, attrs.qtypes, "nxdomain"), pattern, line)
            elif target in ("*", "*."):
                c.add(Attrs.make("block", attrs.priority, None, attrs.qtypes, "nodata"), pattern, line)
            elif target.startswith("rpz-passthru"):
                c.add(Attrs.make("allow", attrs.priority, None, attrs.qtypes), pattern, line)
            elif target.startswith("rpz-drop"):
                c.add(Attrs.make("block", attrs.priority, None, attrs.qtypes, "drop"), pattern, line)
            else:
                c.problem(line, f"{owner}: CNAME to {target} (a rewrite to another name) is not supported")
        elif a or aaaa:
            to = [r.address for r in (a or [])][:1] + [r.address for r in (aaaa or [])][:1]
            c.add(Attrs.make("synthesize", attrs.priority, to, attrs.qtypes), pattern, line)
        else:
            c.problem(line, f"{owner}: no CNAME, A or AAAA policy record")


def _line_of(msg: str) -> int | None:
    m = re.search(r":(\d+):", msg)
    return int(m.group(1)) if m else None


def _owner_lines(text: str) -> dict[str, int]:
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        if line and not line[0].isspace() and not line.startswith((";", "$")):
            out.setdefault(line.split()[0].rstrip("."), n)
    return out


PARSERS = {"domains": parse_domains, "hosts": parse_hosts, "adblock": parse_adblock, "rpz": parse_rpz}


def parse_file(path: Path, fmt: str, attrs: Attrs, strict: bool = False) -> Parsed:
    if fmt not in PARSERS:
        raise UsageError(f"unknown format {fmt!r}", f"use one of: {', '.join(FORMATS)}")
    text = _read(path)
    c = _Collector(str(path), strict)
    c.out.lines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    PARSERS[fmt](text, c, attrs)
    return c.out


def guess_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".rpz", ".zone")) or "rpz" in name:
        return "rpz"
    head = path.read_text(errors="replace")[:4096]
    if "||" in head and "^" in head:
        return "adblock"
    if re.search(r"^\s*(0\.0\.0\.0|127\.0\.0\.1|::1?)\s+\S", head, re.M):
        return "hosts"
    return "domains"
