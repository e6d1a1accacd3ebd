"""Run a plan: skip what is satisfied, apply the rest in order, and on a
failure undo what this run applied, in reverse."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from nexusctl.engine.actions import Action, Ctx
from nexusctl.errors import NexusError, OperationFailed

# Test hook for fault injection: NEXUS_FAULT_AFTER_STEP=N stops the process
# (SIGKILL, like a power cut of the CLI) right after the Nth applied action.
FAULT_ENV = "NEXUS_FAULT_AFTER_STEP"


@dataclass
class StepResult:
    action: Action
    status: str            # unchanged | changed | planned | failed | rolled_back | skipped
    error: str | None = None

    def to_json(self) -> dict:
        out = {**self.action.to_json(), "status": self.status}
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class PlanResult:
    steps: list[StepResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        return any(s.status == "changed" and not s.action.bookkeeping for s in self.steps)

    @property
    def would_change(self) -> bool:
        return any(s.status == "planned" for s in self.steps)

    def to_json(self) -> dict:
        return {
            "changed": self.changed,
            "dry_run": self.dry_run,
            "actions": [s.to_json() for s in self.steps if s.status != "unchanged" or self.dry_run],
            "warnings": list(self.warnings),
        }


class PlanFailed(OperationFailed):
    def __init__(self, err: NexusError, result: PlanResult, rolled_back: bool | None):
        if rolled_back is None:
            msg = err.message
        elif rolled_back:
            msg = f"{err.message} (what this run changed was rolled back; the host is as it was before)"
        else:
            msg = f"{err.message} (some steps could not be undone; run `nexusctl down` to clean up)"
        super().__init__(msg, err.hint, details=err.details)
        self.exit_code = err.exit_code
        self.result = result


def execute(actions: list[Action], ctx: Ctx, *, dry_run: bool = False, rollback: bool = True,
            on_step: Callable[[Action], None] | None = None) -> PlanResult:
    result = PlanResult(dry_run=dry_run)
    applied: list[Action] = []
    fault_after = int(os.environ.get(FAULT_ENV, "0") or 0)
    for action in actions:
        if on_step:
            on_step(action)
        try:
            if action.satisfied(ctx):
                result.steps.append(StepResult(action, "unchanged"))
                continue
            if dry_run:
                result.steps.append(StepResult(action, "planned"))
                continue
            action.apply(ctx)
            applied.append(action)
            result.steps.append(StepResult(action, "changed"))
            if fault_after and len(applied) >= fault_after:
                os.kill(os.getpid(), 9)
        except (NexusError, OSError) as e:
            err = e if isinstance(e, NexusError) else OperationFailed(f"{action.describe()}: {e.strerror or e}")
            result.steps.append(StepResult(action, "failed", err.message))
            result.warnings.extend(ctx.warnings)
            ok = None
            if rollback:
                # the failed step may have done part of its work: undo it first
                ok = _rollback([*applied, action], ctx, result)
            raise PlanFailed(err, result, ok) from e
    result.warnings.extend(w for w in ctx.warnings if w not in result.warnings)
    return result


def _rollback(applied: list[Action], ctx: Ctx, result: PlanResult) -> bool:
    ok = True
    for action in reversed(applied):
        try:
            action.undo(ctx)
            for s in result.steps:
                if s.action is action:
                    s.status = "rolled_back"
        except Exception as e:  # noqa: BLE001 - keep undoing the rest
            ok = False
            result.warnings.append(f"could not undo `{action.describe()}`: {e}")
    try:
        ctx.state.save()
    except OSError:
        ok = False
    return ok
