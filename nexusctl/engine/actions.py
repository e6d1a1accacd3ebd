"""The plan's unit: an Action knows how to describe itself, whether the host
already satisfies it, how to apply it and how to undo it.

Actions never call subprocesses or libbpf themselves except through
ctx.runner, so a plan can be printed (--dry-run), tested with a fake runner,
and rolled back in reverse order when a step fails.

Planning against what is live: `satisfied(ctx)` looks at the host (pins, program
ids and tags, attachments, map contents), never only at the state file, and may
set `self.reason` to say *why* the action is needed ("object changed", "map
nexus_x still the old copy", ...). `diff(ctx)`, called only when the action is
not satisfied and the user asked for `--diff`, returns what will change as
{field: [live, wanted]} (or any JSON-able value). Features report their own
desired-vs-live difference the same way: an action returned by a feature's
extra_actions() implements satisfied/describe/diff, and `apply --check --diff`
shows it with everything else (the policy set is meant to plug in here).

`iface` names the interface an action belongs to ("netns/name" or "name"); the
executor treats each interface as a unit: one failing interface is rolled back
and reported while the others still attach.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nexusctl.config.model import Config
    from nexusctl.engine.state import State
    from nexusctl.tools.runner import Runner


@dataclass
class Ctx:
    runner: "Runner"
    config: "Config"
    state: "State"
    warnings: list[str] = field(default_factory=list)
    cache: dict = field(default_factory=dict)      # observations shared between actions in one run

    def warn(self, msg: str) -> None:
        if msg not in self.warnings:
            self.warnings.append(msg)


class Action:
    """Subclasses set `kind` and implement describe/satisfied/apply (and undo when it can)."""

    kind: str = "action"
    #: True when apply only records something (no kernel/host change)
    bookkeeping: bool = False
    #: the interface this action belongs to (per-interface failure isolation), or None
    iface: str | None = None
    #: why the action is needed, set by satisfied() (shown with the plan)
    reason: str = ""

    def describe(self) -> str:
        raise NotImplementedError

    def commands(self, ctx: Ctx) -> list[str]:
        """The commands or kernel actions apply would run, for --dry-run."""
        return [self.describe()]

    def satisfied(self, ctx: Ctx) -> bool:
        return False

    def apply(self, ctx: Ctx) -> Any:
        raise NotImplementedError

    def undo(self, ctx: Ctx) -> None:
        """Best-effort reversal of apply; default: nothing to undo."""

    def diff(self, ctx: Ctx):
        """What apply will change, as {field: [live, wanted]}; None when there is nothing to show."""
        return None

    def to_json(self) -> dict:
        out = {"kind": self.kind, "action": self.describe()}
        if self.iface:
            out["interface"] = self.iface
        if self.reason:
            out["reason"] = self.reason
        return out

    def __repr__(self) -> str:
        return f"<{self.kind}: {self.describe()}>"
