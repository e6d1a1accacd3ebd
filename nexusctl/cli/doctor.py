"""nexusctl doctor."""
from __future__ import annotations

import typer
from rich.table import Table

from nexusctl import render
from nexusctl.errors import ExitCode
from nexusctl.ops import doctor as core


def register(app: typer.Typer) -> None:
    @app.command("doctor")
    def doctor_cmd(ctx: typer.Context):
        """Probe kernel, bpffs, BTF and tools; print what is missing and the fix.

        Exit 3 when something required is missing. Example: nexusctl doctor --json
        """
        a = ctx.obj
        data = core.doctor(a)

        def human(d):
            t = Table(title="nexus doctor", title_justify="left")
            for c in ("", "check", "detail", "fix"):
                t.add_column(c)
            for c in d["checks"]:
                mark = "[green]ok[/green]" if c["ok"] else ("[red]MISSING[/red]" if c["required"] else "[yellow]no[/yellow]")
                t.add_row(mark, c["name"], c["detail"], c["fix"])
            a.out.print(t)
            if d["missing"]:
                a.err.print(f"[red]missing:[/red] {', '.join(d['missing'])}")
        render.emit(a, data, human)
        return 0 if data["ok"] else int(ExitCode.UNSUPPORTED)
