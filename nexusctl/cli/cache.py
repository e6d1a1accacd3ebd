"""nexusctl cache list / cache flush."""
from __future__ import annotations

from typing import Optional

import typer

from nexusctl import render
from nexusctl.ops import cache as core

app = typer.Typer(help="The in-kernel DNS answer cache.", no_args_is_help=True)


@app.command("list")
def list_cmd(ctx: typer.Context, limit: Optional[int] = typer.Option(None, "--limit", min=1),
             records: bool = typer.Option(True, "--records/--no-records", help="decode the cached records")):
    """Cached answers with their age, remaining lifetime and records.

    \b
    Examples:
      nexusctl cache list
      nexusctl --json cache list | jq '.entries[].name'
    """
    a = ctx.obj
    data = core.list_entries(a, limit, records)

    def human(d):
        rows = [{"name": e["name"], "type": e["qtype"], "do": "DO" if e["do"] else "", "rcode": e["rcode"],
                 "records": e["records"], "age s": e["age_s"], "expires in s": e["expires_in_s"],
                 "answer": "\n".join(e.get("answer", []))} for e in d["entries"]]
        render.table(a, rows, title=f"Answer cache ({d['count']} of {d['max_entries']})")
    render.emit(a, data, human)


@app.command("flush")
def flush_cmd(ctx: typer.Context, name: Optional[str] = typer.Argument(None, help="only this name (all types)")):
    """Remove cached answers (all, or one name's); the next queries go to the resolver.

    \b
    Examples:
      nexusctl cache flush
      nexusctl cache flush h7.lab.test
    """
    a = ctx.obj
    data = core.flush(a, name)
    render.emit(a, data, lambda d: a.out.print(f"removed {d.get('removed', 0)} cached answer(s)"
                                               if not d.get("dry_run") else
                                               f"would remove {d['would_flush']} cached answer(s)"))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="cache")
