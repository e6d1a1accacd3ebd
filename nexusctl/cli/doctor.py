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
        """Probe kernel, bpffs, BTF, tools and interfaces; each finding comes with its fix.

        Kernel program/map/helper support from `bpftool feature probe`, bpffs,
        BTF, tracefs, cgroup v2, tool versions, and for every configured
        interface (and veth peer): does it exist, its driver and MTU, the XDP
        features its driver declares (read from the kernel's netdev netlink
        family, nothing is attached to find out), what XDP program runs on it.

        \b
        JSON (--json): {"ok", "missing": [names], "checks": [{"group",
          "name", "ok", "detail", "fix", "required"}], "interfaces":
          [{"interface", "role", "exists", "driver", "mtu", "xdp_features",
          "native_xdp", "attached", "wanted_mode"}]}

        \b
        Examples:
          nexusctl doctor
          nexusctl --json doctor | jq '.interfaces[] | [.interface, .native_xdp]'
          nexusctl --json doctor | jq '.checks[] | select(.ok | not) | .fix'

        \b
        Exit status:
          0 everything required is there   3 something required is missing
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
