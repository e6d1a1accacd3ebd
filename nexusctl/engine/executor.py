"""Run a plan: skip what is satisfied, apply the rest in order, and on a
failure undo what this run applied, in reverse.

Interfaces are units of their own: when an action that belongs to an interface
(Action.iface) fails, only that interface's actions from this run are undone and
its remaining actions are skipped; the other interfaces go on. The run then ends
with PartialFailure (exit 1) and a per-interface result. A failure outside any
interface (a load, a map, a config write) rolls the whole run back as before.
"""
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
    diff: object = None

    def to_json(self) -> dict:
        out = {**self.action.to_json(), "status": self.status}
        if self.error:
            out["error"] = self.error
        if self.diff is not None:
            out["diff"] = self.diff
        return out


@dataclass
class PlanResult:
    steps: list[StepResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dry_run: bool = False
    check: bool = False        # --check: plan only; "changed" then means "would change"
    errors: dict[str, str] = field(default_factory=dict)      # interface → why it failed
    extra: dict = field(default_factory=dict)                 # command-specific fields for the JSON

    @property
    def changed(self) -> bool:
        return any(s.status == "changed" and not s.action.bookkeeping for s in self.steps)

    @property
    def would_change(self) -> bool:
        return any(s.status == "planned" and not s.action.bookkeeping for s in self.steps)

    def interfaces(self) -> list[dict]:
        """One row per interface the plan touched: changed | unchanged | planned | failed."""
        rank = {"unchanged": 0, "planned": 1, "changed": 2, "failed": 3}
        out: dict[str, dict] = {}
        for s in self.steps:
            g = s.action.iface
            if not g:
                continue
            row = out.setdefault(g, {"interface": g, "status": "unchanged"})
            st = {"rolled_back": "failed", "skipped": "failed"}.get(s.status, s.status)
            if g in self.errors:
                st = "failed"
            if s.action.bookkeeping and st in ("changed", "planned"):
                continue
            if rank.get(st, 0) > rank[row["status"]]:
                row["status"] = st
            if g in self.errors:
                row["error"] = self.errors[g]
        return list(out.values())

    def to_json(self) -> dict:
        shown = [s for s in self.steps if s.status != "unchanged" or (self.dry_run and not self.check)]
        out = {
            "changed": self.would_change if self.check else self.changed,
            "dry_run": self.dry_run,
            "actions": [s.to_json() for s in shown],
            "warnings": list(self.warnings),
        }
        if self.check:
            out["check"] = True
            out["would_change"] = self.would_change
        ifaces = self.interfaces()
        if ifaces:
            out["interfaces"] = ifaces
        out.update(self.extra)
        return out


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
        self.out = result.to_json()


class PartialFailure(OperationFailed):
    """Some interfaces failed, the others are up: exit 1 with per-interface results."""

    def __init__(self, result: PlanResult, hints: list[str]):
        rows = result.interfaces()
        bad = [r for r in rows if r["status"] == "failed"]
        good = [r for r in rows if r["status"] != "failed"]
        lines = [f"{len(bad)} of {len(rows)} interface(s) failed:"]
        lines += [f"  {r['interface']}: {r.get('error', 'failed')}" for r in bad]
        if good:
            lines.append("the others are up: " + ", ".join(f"{r['interface']} ({r['status']})" for r in good))
        lines.append("each failed interface was left as it was before this run")
        hint = "; ".join(dict.fromkeys(h for h in hints if h)) or None
        super().__init__("\n".join(lines), hint)
        self.result = result
        self.out = result.to_json()


def execute(actions: list[Action], ctx: Ctx, *, dry_run: bool = False, rollback: bool = True,
            on_step: Callable[[Action], None] | None = None, check: bool = False,
            diff: bool = False) -> PlanResult:
    dry_run = dry_run or check
    result = PlanResult(dry_run=dry_run, check=check)
    applied: list[Action] = []
    failed: dict[str, NexusError] = {}
    fault_after = int(os.environ.get(FAULT_ENV, "0") or 0)
    n_applied = 0
    for action in actions:
        group = action.iface
        if group and group in failed:
            result.steps.append(StepResult(action, "skipped"))
            continue
        if on_step:
            on_step(action)
        try:
            if action.satisfied(ctx):
                result.steps.append(StepResult(action, "unchanged"))
                continue
            d = action.diff(ctx) if diff else None
            if dry_run:
                result.steps.append(StepResult(action, "planned", diff=d))
                continue
            action.apply(ctx)
            applied.append(action)
            n_applied += 1
            result.steps.append(StepResult(action, "changed", diff=d))
            if fault_after and n_applied >= fault_after:
                os.kill(os.getpid(), 9)
        except (NexusError, OSError) as e:
            err = e if isinstance(e, NexusError) else OperationFailed(f"{action.describe()}: {e.strerror or e}")
            result.steps.append(StepResult(action, "failed", err.message))
            if group:
                # Only this interface: undo what this run did to it, skip the rest of it.
                failed[group] = err
                result.errors[group] = err.message
                mine = [a for a in applied if a.iface == group]
                applied = [a for a in applied if a.iface != group]
                if rollback and not dry_run:
                    _rollback([*mine, action], ctx, result)
                continue
            result.warnings.extend(w for w in ctx.warnings if w not in result.warnings)
            ok = None          # nothing was undone (no rollback asked)
            if rollback:
                # the failed step may have done part of its work: undo it first
                ok = _rollback([*applied, action], ctx, result)
            raise PlanFailed(err, result, ok) from e
    result.warnings.extend(w for w in ctx.warnings if w not in result.warnings)
    if failed:
        raise PartialFailure(result, [e.hint for e in failed.values()])
    return result


def _rollback(applied: list[Action], ctx: Ctx, result: PlanResult) -> bool:
    ok = True
    for action in reversed(applied):
        try:
            action.undo(ctx)
            for s in result.steps:
                if s.action is action and s.status == "changed":
                    s.status = "rolled_back"
        except Exception as e:  # noqa: BLE001 - keep undoing the rest
            ok = False
            result.warnings.append(f"could not undo `{action.describe()}`: {e}")
    try:
        ctx.state.save()
    except OSError:
        ok = False
    return ok
