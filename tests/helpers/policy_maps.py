"""DNS policy rules for the fuzzer: loaded into the kernel maps of a test's
objects through the production loader (nexusctl.policy.kernel.PolicyKernel),
and judged by an independent reference of the contract's semantics (decide),
so every mutated query also checks the kernel's decision."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from nexusctl.policy.kernel import PolicyKernel
from nexusctl.policy.rules import Attrs, Group
from nexusctl.policy.store import Source
from nexusctl.tools.runner import Runner


@dataclass
class Rule:
    pattern: str                  # "name", "*.name" or "prefix*"
    action: str
    to: list[str] = field(default_factory=list)     # redirect/synthesize: one address per family at most
    priority: int = 100

    @property
    def kind(self) -> str:
        if self.pattern.endswith("*"):
            return "prefix"
        return "wildcard" if self.pattern.startswith("*.") else "exact"

    @property
    def labels(self) -> list[bytes]:
        return [x.encode() for x in self.pattern.lower().removeprefix("*.").split(".")]

    def addr(self, family: int) -> bytes | None:
        for a in self.to:
            ip = ipaddress.ip_address(a)
            if ip.version == family:
                return ip.packed
        return None

    def matches(self, labels: list[bytes]) -> bool:
        """labels: the query name's labels, ASCII lower-cased (the kernel hashes
        labels, so a label holding a dot is one label; prefix rules compare
        the dotted text, which cannot tell the two apart)."""
        mine = self.labels
        if self.kind == "prefix":
            return b".".join(labels).startswith(self.pattern.lower()[:-1].encode())
        if self.kind == "wildcard":
            return len(labels) > len(mine) and labels[-len(mine):] == mine
        return labels == mine


def install(lo, rules: list[Rule]) -> None:
    """Load the rules into the objects' pinned policy maps, as `policy sync` does."""
    pk = PolicyKernel(Runner(), lo.pin_dir, max_rules=2097152, bloom=True)
    try:
        pk.load([Source("fuzz", [Group(Attrs.make(r.action, r.priority, r.to or None), [r.pattern])
                                 for r in rules])])
    finally:
        pk.close()


def decide(rules: list[Rule], labels: list[bytes]) -> Rule | None:
    """The deciding rule, by the contract: lower priority wins, then the longer
    pattern, then allow. (Every rule here covers every query type.)"""
    hits = [r for r in rules if r.matches(labels)]
    if not hits:
        return None
    return min(hits, key=lambda r: (r.priority, -len(r.pattern), r.action != "allow"))
