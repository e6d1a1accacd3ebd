"""gc: find (and with apply, remove) nexus pins, attachments and state records
that no config or state accounts for. See nexusctl.engine.gc for the scope."""
from __future__ import annotations

from nexusctl.engine.executor import PlanResult, execute
from nexusctl.engine.gc import plan_gc


def gc(app, apply: bool = False) -> PlanResult:
    cfg = app.config
    with app.lock():
        ctx = app.ctx()
        actions, kept = plan_gc(cfg, ctx.state, app.runner)
        res = execute(actions, ctx, dry_run=app.dry_run or not apply, rollback=False)
        res.extra["found"] = [
            {"kind": s.action.kind, "target": s.action.describe(), "why": getattr(s.action, "gc_why", s.action.reason),
             "status": s.status}
            for s in res.steps if s.status != "unchanged"]
        res.extra["kept"] = kept
        res.extra["applied"] = bool(apply and not app.dry_run)
        return res
