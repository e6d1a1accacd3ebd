"""The plan's unit: an Action knows how to describe itself, whether the host
already satisfies it, how to apply it and how to undo it.

Actions never call subprocesses or libbpf themselves except through
ctx.runner, so a plan can be printed (--dry-run), tested with a fake runner,
and rolled back in reverse order when a step fails.
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

    def to_json(self) -> dict:
        return {"kind": self.kind, "action": self.describe()}

    def __repr__(self) -> str:
        return f"<{self.kind}: {self.describe()}>"
