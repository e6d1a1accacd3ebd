"""nexusctl enforce status / stats / events."""
from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from nexusctl import render
from nexusctl.ops import enforce as core

app = typer.Typer(help="The DNS egress enforcer: which cgroups may send DNS where.", no_args_is_help=True)


def stats_tables(d: dict) -> list:
    """Human tables for the enforcer's part of `stats` (empty when it is off and idle)."""
    e = d.get("enforce")
    if not e or (not e["enabled"] and not any(e["counters"].values())):
        return []
    t = Table(title=f"DNS egress enforcer (mode {e['mode']})", title_justify="left")
    t.add_column("counter")
    t.add_column("value", justify="right")
    for k, v in e["counters"].items():
        t.add_row(k, f"{v:,}")
    c = Table(title="Enforcer cgroups", title_justify="left")
    for col in ("cgroup", "checked", "allowed", "denied", "audited"):
        c.add_column(col, justify="left" if col == "cgroup" else "right")
    for cg in e["cgroups"]:
        c.add_row(cg["path"], *(f"{cg[k]:,}" for k in ("checked", "allowed", "denied", "audited")))
    out = [t, c]
    if e["processes"]:
        p = Table(title="Processes with DNS refused (or audited)", title_justify="left")
        for col in ("pid", "comm", "dns_denied"):
            p.add_column(col, justify="left" if col == "comm" else "right")
        for r in e["processes"]:
            p.add_row(str(r["pid"]), r["comm"], f"{r['dns_denied']:,}")
        out.append(p)
    return out


def _status_human(a, d: dict) -> None:
    state = "enabled" if d["enabled"] else "disabled"
    lsm = d["lsm"]
    a.out.print(f"enforcer {state}, mode {d['mode']}, hooks: {d['hooks']}; cgroup v2 at {d['cgroup2']}; "
                f"BPF LSM ({lsm['setting']}): {'usable' if lsm['usable'] else 'not supported'} — {lsm['detail']}")
    t = Table(title="Enforced cgroups", title_justify="left")
    for col in ("cgroup", "id", "hooks attached", "policy", "allow", "ports"):
        t.add_column(col, overflow="fold")
    for cg in d["cgroups"]:
        if not cg["exists"]:
            hooks = "[red]cgroup missing[/red]"
        elif cg["covered_by"]:
            hooks = f"via {cg['covered_by']}"
        elif cg["hooks"]:
            hooks = ", ".join(h if ok else f"[red]{h} missing[/red]" for h, ok in cg["hooks"].items())
        else:
            hooks = d["hooks"]
        t.add_row(cg["dir"], str(cg["cgroup_id"] or "-"), hooks, "loaded" if cg["policy_loaded"] else "-",
                  ", ".join(cg["allow"]) or "(nothing)", ",".join(map(str, cg["ports"])))
    a.out.print(t)


def _event_line(ev: dict) -> str:
    return (f"{ev['time']} {ev['verdict']:<8} pid {ev['pid']} ({ev['comm']}) {ev['protocol']} "
            f"→ {ev['destination']} port {ev['port']} [{ev['hook']}, cgroup {ev['cgroup']}]")


@app.command("status")
def status_cmd(ctx: typer.Context):
    """Each configured cgroup: its id, the hooks attached to it, its allow list.

    \b
    Examples:
      nexusctl enforce status
      nexusctl --json enforce status
    """
    a = ctx.obj
    render.emit(a, core.status(a), lambda d: _status_human(a, d))


@app.command("stats")
def stats_cmd(ctx: typer.Context):
    """Denials: counters, per configured cgroup, per process (also in `nexusctl stats`).

    \b
    Examples:
      nexusctl enforce stats
      nexusctl --json enforce stats | jq .counters
    """
    a = ctx.obj
    data = core.stats_section(a)

    def human(d):
        for t in stats_tables({"enforce": d}) or ["enforcer: disabled, nothing counted"]:
            a.out.print(t)
    render.emit(a, data, human)


@app.command("events")
def events_cmd(ctx: typer.Context,
               follow: bool = typer.Option(False, "--follow", "-f", help="keep reading new events"),
               count: Optional[int] = typer.Option(None, "--count", "-n", min=1, help="stop after N events"),
               timeout: Optional[float] = typer.Option(None, "--timeout", min=0.0,
                                                       help="with --follow: stop after this many seconds")):
    """Refused (or audited) DNS sends: pid, comm, destination. Reading consumes them.

    Without --follow: what accumulated since the last reader. With --json, one
    list at the end (Ctrl-C, --count or --timeout ends it).
    Examples: nexusctl enforce events; nexusctl enforce events -f; nexusctl --json enforce events -f --timeout 10
    """
    a = ctx.obj
    live = None if a.json else (lambda ev: a.out.print(_event_line(ev), markup=False, highlight=False))
    evs = core.events(a, follow=follow, limit=count, timeout=timeout, on_event=live)
    if a.json:
        render.emit(a, evs)
    elif not evs and not follow:
        a.err.print("no new enforcer events")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="enforce")
