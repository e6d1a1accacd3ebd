"""nexusctl policy add / rm / list / import / sync."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from nexusctl import render
from nexusctl.ops import policy as core

app = typer.Typer(help="DNS policy rules: block, redirect, synthesize, allow.", no_args_is_help=True)


def _qtypes(v: Optional[str]) -> list[str]:
    return [t.strip() for t in v.split(",") if t.strip()] if v else []


@app.command("add")
def add_cmd(ctx: typer.Context,
            pattern: str = typer.Argument(..., help="name, *.suffix (below it) or prefix*"),
            action: str = typer.Option(..., "--action", "-a", help="block | redirect | synthesize | allow"),
            to: Optional[str] = typer.Option(None, "--to", help="address for redirect/synthesize"),
            qtype: Optional[str] = typer.Option(None, "--qtype", help="only these types, e.g. A,AAAA"),
            priority: int = typer.Option(100, "--priority", min=0, max=65535, help="lower wins")):
    """Add a rule (takes effect at once, survives reload; `policy sync` drops it).

    \\b
    Examples:
      nexusctl policy add '*.ads.example' --action block
      nexusctl policy add intranet.example --action synthesize --to 198.18.0.10
      nexusctl policy add cdn.example --action redirect --to 2001:db8::10 --qtype AAAA
      nexusctl policy add good.ads.example --action allow --priority 10
    """
    a = ctx.obj
    d = core.add(a, pattern, action, to, _qtypes(qtype), priority)
    render.emit(a, d, lambda d: a.out.print(f"{'added' if d['changed'] else 'unchanged'}: "
                                            f"{d['rule']['pattern']} → {d['rule']['action']}"
                                            f"{' ' + d['rule']['to'] if d['rule']['to'] else ''}"
                                            f"{'' if d['in_kernel'] else ' (kernel not up: applied at the next up)'}"))


@app.command("rm")
def rm_cmd(ctx: typer.Context, pattern: str = typer.Argument(...)):
    """Remove a runtime or imported rule (config rules are removed in the config).

    \\b
    Examples:
      nexusctl policy rm '*.ads.example'
    """
    a = ctx.obj
    d = core.rm(a, pattern)
    render.emit(a, d, lambda d: a.out.print(f"removed {d['removed']} (from {', '.join(d['from'])})"
                                            + (f"; now {d['now']['action']} by {d['now']['source']}"
                                               if d.get("now") else "")))


@app.command("list")
def list_cmd(ctx: typer.Context,
             limit: Optional[int] = typer.Option(None, "--limit", min=1),
             source: Optional[str] = typer.Option(None, "--source", help="config | runtime | import:NAME | blocklist:")):
    """The rules in effect (after precedence between sources), best first.

    \\b
    Examples:
      nexusctl policy list
      nexusctl --json policy list | jq '.[] | select(.action=="allow")'
    """
    a = ctx.obj
    d = core.list_rules(a, limit, source)
    if a.json:
        render.emit(a, d["rules"])          # the contract: a list of rules
        return
    render.table(a, [{"pattern": r["pattern"], "action": r["action"], "to": r["to"] or "",
                      "qtypes": ",".join(r["qtypes"]) or "all", "priority": r["priority"], "source": r["source"]}
                     for r in d["rules"]], title=f"Policy rules ({d['total']})")
    if "kernel" in d:
        k = d["kernel"]
        a.err.print(f"kernel: generation {k['generation']}, {k['rules']} hashed rules, "
                    f"{k['prefix_rules']} prefix rules")


@app.command("import")
def import_cmd(ctx: typer.Context, file: Path = typer.Argument(..., help="the list"),
               fmt: Optional[str] = typer.Option(None, "--format", "-f", help="domains | hosts | adblock | rpz"),
               action: str = typer.Option("block", "--action", "-a"),
               to: Optional[str] = typer.Option(None, "--to"),
               priority: int = typer.Option(1000, "--priority", min=0, max=65535),
               strict: bool = typer.Option(False, "--strict", help="stop at the first bad line"),
               name: Optional[str] = typer.Option(None, "--name", help="source name (default: file name)")):
    """Import a list; the whole rule set is swapped in at once (no query sees half of it).

    Bad lines are reported with file:line and skipped (or fatal with --strict).

    \\b
    Examples:
      nexusctl policy import ads.txt --format domains
      nexusctl policy import hosts.txt --format hosts
      nexusctl policy import easylist.txt --format adblock
      nexusctl policy import local.rpz --format rpz
    """
    a = ctx.obj
    d = core.import_file(a, file, fmt, action, to, priority, strict, name)

    def human(d):
        for p in d["problems"]:
            a.warn(p)
        if d["skipped"] > len(d["problems"]):
            a.warn(f"{d['skipped'] - len(d['problems'])} more lines skipped")
        k = d.get("kernel") or {}
        a.out.print(f"imported {d['imported']} rules from {file} ({d['format']}) as import:{d['name']}"
                    + (f"; {k.get('rules', 0)} rules live in generation {k.get('generation')} "
                       f"after {d['seconds']} s" if k else ""))
    render.emit(a, d, human)


@app.command("sync")
def sync_cmd(ctx: typer.Context):
    """Make the kernel match the config's policies: and blocklists: (drops runtime rules and imports).

    \\b
    Examples:
      nexusctl --dry-run policy sync     # what it would change
      nexusctl policy sync
    """
    a = ctx.obj
    d = core.sync(a)
    render.emit(a, d, lambda d: a.out.print(
        f"{'would change' if d.get('dry_run') else 'synced'}: +{d['added']} -{d['removed']} ~{d['modified']} rules"))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="policy")
