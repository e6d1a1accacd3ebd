"""nexusctl up / apply / down / reload / status."""
from __future__ import annotations

import typer

from nexusctl import render
from nexusctl.engine.executor import PartialFailure, PlanFailed
from nexusctl.ops import deploy as core

EXIT_CODES = """
\b
Exit status:
  0  done (also when nothing had to change)
  1  failed: the message says what state is left; with several interfaces,
     one failing interface is reported and the others still attach
  2  bad usage or config (file:line and the field)
  3  the kernel or host lacks a needed feature
  4  another nexusctl holds the lock
"""

CHECK = typer.Option(False, "--check", help="plan only: show what would change against the live host, change "
                     "nothing (with --json, \"changed\" says whether anything would change)")
DIFF = typer.Option(False, "--diff", help="show, for each action, what changes: {field: [live, wanted]}")


def _plan_cmd(ctx: typer.Context, fn, label: str, **kw) -> int:
    a = ctx.obj
    try:
        res = fn(a, **kw)
    except (PartialFailure, PlanFailed) as e:
        if not a.json:                         # the steps first, then the error (cli.app prints it)
            render.plan(a, e.result, label)
        raise
    render.emit(a, res.to_json(), lambda _: render.plan(a, res, label))
    return 0


UP_HELP = """Make the host match the config, changing only what differs from what is live.

Builds what changed, then plans against the live host: object hashes, program
ids and tags, map layouts, attachments, config map values and what features
report (the policy set). Only the difference runs; a second identical run
changes nothing and says so ("changed": false). Maps keep their contents;
a map whose layout changed is migrated (or recreated with a warning).

Several interfaces may be configured: each is a unit. One that fails (it does
not exist, the driver refuses XDP, ...) is rolled back and reported while the
others still attach; the exit status is then 1 and the JSON has per-interface
results in "interfaces".

\b
JSON (--json): {"changed", "dry_run", "actions": [{"kind", "action",
  "status", "reason", "interface", "diff"}], "warnings", "interfaces"}
  With --check, "changed" means "would change" (as Ansible's check mode).

\b
Examples:
  nexusctl up                              # converge, print what changed
  nexusctl apply --check --diff            # what would change, field by field
  nexusctl --json apply | jq .changed      # CI / Ansible changed_when
  nexusctl -c /etc/nexus/nexus.yaml apply --diff
  nexusctl --dry-run up                    # every step, with the commands
""" + EXIT_CODES


DOWN_HELP = """Detach and remove everything nexusctl created, and nothing else.

Detaches XDP, TC and tracing links recorded in the state (and nexus
programs on the configured interfaces, should the state be lost),
removes the clsact qdisc only if nexus created it and nothing else uses
it, then removes pin_root and the state file. Idempotent.

\b
Examples:
  nexusctl down
  nexusctl --dry-run down                  # the detach commands, run nothing
  nexusctl --json down | jq .changed
""" + EXIT_CODES


RELOAD_HELP = """Replace every program without a traffic gap; maps (cache, counters, policies) survive.

New programs are loaded and pinned beside the old ones, then swapped in:
XDP in one netlink replace, TC with `tc filter replace` on the same
pref/handle, tracing links attached anew before the old link goes. No
interface is ever without a program, so no packet is missed. Pinned maps
are reused when their layout is unchanged; when it changed (another
max_entries, a new value struct) the map is migrated entry by entry,
field by field, or recreated with a warning when it cannot be.

\b
JSON (--json): the plan shape of `up`, plus "reloaded": [{"program",
  "old_id", "new_id", "tag"}], "maps_kept", "maps_replaced".

\b
Examples:
  nexusctl reload                          # after `nexusctl build` or an upgrade
  nexusctl reload --check                  # what would be swapped
  nexusctl --json reload | jq '.reloaded[] | [.program, .old_id, .new_id]'
""" + EXIT_CODES


def register(app: typer.Typer) -> None:
    @app.command("up", help=UP_HELP)
    def up_cmd(ctx: typer.Context, check: bool = CHECK, diff: bool = DIFF):
        return _plan_cmd(ctx, core.up, "up", check=check, diff=diff)

    @app.command("apply", help=UP_HELP.replace("Make the host", "Same as up: make the host", 1))
    def apply_cmd(ctx: typer.Context, check: bool = CHECK, diff: bool = DIFF):
        return _plan_cmd(ctx, core.up, "apply", check=check, diff=diff, title="apply")

    @app.command("down", help=DOWN_HELP)
    def down_cmd(ctx: typer.Context):
        return _plan_cmd(ctx, core.down, "down")

    @app.command("reload", help=RELOAD_HELP)
    def reload_cmd(ctx: typer.Context, check: bool = CHECK, diff: bool = DIFF):
        return _plan_cmd(ctx, core.reload, "reload", check=check, diff=diff)

    @app.command("status")
    def status_cmd(ctx: typer.Context):
        """What is loaded, pinned and attached where, in which mode; map fill levels.

        Reads the live host (pins, netlink, tc) and checks it against the state:
        an attachment that vanished is shown as a warning.

        \b
        JSON (--json): {"pin_root", "programs": [{"name", "type", "id",
          "attachments": [{"kind", "target", "mode"}]}], "maps": [{"name",
          "type", "entries", "max_entries"}], "warnings"}

        \b
        Examples:
          nexusctl status
          nexusctl status --json | jq '.programs[].attachments'
        """
        a = ctx.obj
        data = core.status(a)
        render.emit(a, data, lambda d: render.status(a, d))
