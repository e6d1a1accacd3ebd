"""nexusctl gc."""
from __future__ import annotations

import typer

from nexusctl import render
from nexusctl.ops import gc as core

GC_HELP = """Find nexus pins, attachments and state records nothing accounts for; remove them with --apply.

Garbage is what neither the config nor the state accounts for: pins of
programs, maps and links no configured object or link uses, staging pins an
interrupted run left, state records of interfaces that are gone, and nexus
XDP/TC programs attached to interfaces that no config or state names (after
a lost state). Without --apply it only reports (a dry run).

\b
Scope: only pins under this config's pin_root; only interfaces in the
network namespaces the config or state names; only nexus programs; never a
program pinned by another nexus instance (another pin root).

\b
JSON (--json): {"changed", "dry_run", "applied", "found": [{"kind",
  "target", "why", "status"}], "kept": [{"what", "target", "why"}],
  "actions", "warnings"}

\b
Examples:
  nexusctl gc                      # what is stale, and why; change nothing
  nexusctl gc --apply              # remove it
  nexusctl --json gc | jq '.found | length'

\b
Exit status:
  0 done   1 a removal failed   2 bad config   4 another nexusctl holds the lock
"""


def register(app: typer.Typer) -> None:
    @app.command("gc", help=GC_HELP)
    def gc_cmd(ctx: typer.Context,
               apply: bool = typer.Option(False, "--apply", help="remove what was found (default: report only)")):
        a = ctx.obj
        res = core.gc(a, apply=apply)

        def human(_):
            found = res.extra["found"]
            if not found:
                a.out.print("gc: nothing stale.")
            for f in found:
                icon = "✔" if f["status"] == "changed" else "→"
                a.out.print(f" {icon} {f['target']}  [dim]({f['why']})[/dim]")
            for k in res.extra["kept"]:
                a.out.print(f" · kept {k['what']} on {k['target']}  [dim]({k['why']})[/dim]")
            for w in res.warnings:
                a.warn(w)
            if found and not res.extra["applied"]:
                a.out.print(f"{len(found)} stale item(s); run `nexusctl gc --apply` to remove them.")
            elif found:
                a.out.print(f"[green]gc: removed {sum(f['status'] == 'changed' for f in found)} item(s).[/green]")
        render.emit(a, res.to_json(), human)
        return 0
