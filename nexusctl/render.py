"""Rendering: one JSON document on stdout with --json, rich tables otherwise."""
from __future__ import annotations

import json
import sys
from typing import Any, Callable

from rich.table import Table
from rich.text import Text

STATUS_STYLE = {"changed": ("✔", "green"), "unchanged": ("·", "dim"), "planned": ("→", "cyan"),
                "failed": ("✘", "red"), "rolled_back": ("↺", "yellow"), "skipped": ("-", "dim")}


def emit(app, data: Any, human: Callable[[Any], None] | None = None) -> None:
    if app.json:
        sys.stdout.write(json.dumps(data, default=_default, sort_keys=False) + "\n")
        sys.stdout.flush()
    elif human is not None:
        human(data)
    else:
        app.out.print_json(json.dumps(data, default=_default))


def _default(o):
    if isinstance(o, bytes):
        return o.hex()
    if hasattr(o, "to_json"):
        return o.to_json()
    return str(o)


def plan(app, result, title: str) -> None:
    steps = result.steps
    check = getattr(result, "check", False)
    shown = [s for s in steps if s.status != "unchanged" or (app.dry_run and not check) or app.verbose]
    if result.dry_run:
        app.out.print(f"[bold]{title} plan[/bold] ({'check' if check else 'dry run'}: nothing was changed)")
    for s in shown:
        icon, style = STATUS_STYLE.get(s.status, ("?", ""))
        line = Text(f" {icon} ", style=style)
        line.append(s.action.describe())
        if s.status == "unchanged":
            line.append("  (already so)", style="dim")
        elif s.action.reason and s.status in ("planned", "changed"):
            line.append(f"  ({s.action.reason})", style="dim")
        if s.error:
            line.append(f"  {s.error}", style="red")
        app.out.print(line)
        for d in _diff_lines(getattr(s, "diff", None)):
            app.out.print(d)
    ifaces = result.interfaces() if hasattr(result, "interfaces") else []
    if len(ifaces) > 1 or any(r["status"] == "failed" for r in ifaces):
        for r in ifaces:
            icon, style = STATUS_STYLE.get(r["status"], ("?", ""))
            line = Text(f" {icon} interface {r['interface']}: {r['status']}", style=style)
            if r.get("error"):
                line.append(f" ({r['error']})")
            app.out.print(line)
    for w in result.warnings:
        app.warn(w)
    if result.dry_run:
        n = sum(1 for s in steps if s.status == "planned")
        app.out.print(f"{n} action(s) would run; {len(steps) - n} already satisfied.")
    elif getattr(result, "errors", None):
        n = sum(1 for s in steps if s.status == "changed")
        app.out.print(f"[yellow]{title}: partly done[/yellow] ({n} change(s); {len(result.errors)} interface(s) "
                      f"failed).")
    elif result.changed:
        n = sum(1 for s in steps if s.status == "changed")
        app.out.print(f"[green]{title}: done[/green] ({n} change(s)).")
    else:
        app.out.print(f"{title}: nothing to do, the host already matches the config.")


def _diff_lines(diff) -> list[Text]:
    """--diff: `- live` / `+ wanted` per field."""
    if not diff:
        return []
    out = []
    items = diff.items() if isinstance(diff, dict) else [("", diff)]
    for k, v in items:
        if isinstance(v, list) and len(v) == 2:
            old, new = v
            if old is not None:
                out.append(Text(f"     - {k}: {_cell(old)}", style="red"))
            if new is not None:
                out.append(Text(f"     + {k}: {_cell(new)}", style="green"))
        else:
            out.append(Text(f"     ~ {k}: {_cell(v)}", style="yellow"))
    return out


def status(app, data: dict) -> None:
    if not data.get("up"):
        app.out.print(f"nexus is not up (no pins under {data['pin_root']}). Run `nexusctl up`.")
        for w in data.get("warnings", []):
            app.warn(w)
        return
    t = Table(title=f"Programs ({data['pin_root']}/progs)", title_justify="left")
    for col in ("program", "type", "id", "attached to", "mode", "verified insns"):
        t.add_column(col, justify="right" if col in ("id", "verified insns") else "left")
    for p in data["programs"]:
        atts = p["attachments"] or [None]
        for i, a in enumerate(atts):
            where = f"{a['kind']} {a['target']}" if a else Text("not attached", style="dim")
            mode = (a.get("mode") or "") if a else ""
            if a and a.get("reason"):
                mode = f"{mode} ({a['reason']})"
            t.add_row(p["name"] if i == 0 else "", p["type"] if i == 0 else "", str(p["id"]) if i == 0 else "",
                      where, mode, str(p["verified_insns"]) if i == 0 else "")
    app.out.print(t)
    m = Table(title=f"Maps ({data['pin_root']}/maps)", title_justify="left")
    for col in ("map", "type", "entries", "max", "fill"):
        m.add_column(col, justify="left" if col in ("map", "type") else "right")
    for mp in data["maps"]:
        n = mp["entries"]
        fill = f"{100 * n / mp['max_entries']:.1f}%" if n is not None and mp["max_entries"] else "-"
        m.add_row(mp["name"], mp["type"], "-" if n is None else str(n), str(mp["max_entries"]), fill)
    app.out.print(m)
    for note in data.get("notes", []):
        app.out.print(note, markup=False)
    for w in data.get("warnings", []):
        app.warn(w)


def _cell(v) -> str:
    if isinstance(v, (dict, list)):
        return json.dumps(v, default=_default, separators=(",", ":"))
    return str(v)


def table(app, rows: list[dict], title: str | None = None, columns: list[str] | None = None) -> None:
    if not rows:
        app.out.print(f"{title + ': ' if title else ''}(empty)")
        return
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*[_cell(r.get(c, "")) for c in columns])
    app.out.print(t)
