"""nexusctl up / apply / down / reload / status."""
from __future__ import annotations

import typer

from nexusctl import render
from nexusctl.ops import deploy as core


def _plan_cmd(ctx: typer.Context, fn, title: str) -> int:
    a = ctx.obj
    res = fn(a)
    render.emit(a, res.to_json(), lambda _: render.plan(a, res, title))
    return 0


def register(app: typer.Typer) -> None:
    @app.command("up")
    def up_cmd(ctx: typer.Context):
        """Make the host match the config: build if needed, load, pin, attach. Idempotent.

        Examples: nexusctl up; nexusctl --dry-run up; nexusctl --json up  (→ {"changed": false, ...} the 2nd time)
        """
        return _plan_cmd(ctx, core.up, "up")

    @app.command("apply")
    def apply_cmd(ctx: typer.Context):
        """Same as up: converge the host to the config and report what changed."""
        return _plan_cmd(ctx, core.up, "apply")

    @app.command("down")
    def down_cmd(ctx: typer.Context):
        """Detach and remove everything nexusctl created, and nothing else.

        Example: nexusctl down
        """
        return _plan_cmd(ctx, core.down, "down")

    @app.command("reload")
    def reload_cmd(ctx: typer.Context):
        """Replace the programs without a traffic gap; pinned maps (cache, counters, policies) survive."""
        return _plan_cmd(ctx, core.reload, "reload")

    @app.command("status")
    def status_cmd(ctx: typer.Context):
        """What is loaded, pinned and attached where, in which mode; map fill levels.

        Example: nexusctl status --json | jq '.programs[].attachments'
        """
        a = ctx.obj
        data = core.status(a)
        render.emit(a, data, lambda d: render.status(a, d))
