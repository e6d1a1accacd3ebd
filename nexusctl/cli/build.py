"""nexusctl build / verify."""
from __future__ import annotations

from typing import List, Optional

import typer

from nexusctl import render
from nexusctl.ops import build as core


def register(app: typer.Typer) -> None:
    @app.command("build")
    def build_cmd(ctx: typer.Context,
                  only: Optional[List[str]] = typer.Argument(None, help="object names (default: every bpf/*.c)"),
                  vmlinux_only: bool = typer.Option(False, "--vmlinux-only", help="only generate vmlinux.h")):
        """Compile bpf/*.c to CO-RE objects (clang -target bpf -g -O2), only what changed.

        vmlinux.h is generated from the running kernel's BTF first. An object is
        rebuilt when its source, a header it includes, vmlinux.h or the flags
        changed; every warning is an error.

        \b
        Examples:
          nexusctl build
          nexusctl build nexus_dns_xdp
          nexusctl --dry-run build                 # the clang calls, run nothing
        """
        a = ctx.obj
        res = core.build(a, only, vmlinux_only)
        render.emit(a, res.to_json(), lambda _: render.plan(a, res, "build"))

    @app.command("verify")
    def verify_cmd(ctx: typer.Context, only: Optional[List[str]] = typer.Argument(None, help="object names")):
        """Load every program into the kernel without attaching; report verifier instruction counts.

        Nothing is pinned or attached; a refused program fails with the tail of
        the verifier log (-v for more).

        \b
        Examples:
          nexusctl verify
          nexusctl --json verify | jq '.objects[] | [.program, .verified_insns]'
        """
        a = ctx.obj
        out = core.verify(a, only)

        def human(d):
            render.table(a, [{"object": r["object"], "program": r["program"] or r.get("skipped"), "type": r["type"],
                              "verified insns": r["verified_insns"], "xlated insns": r["xlated_insns"],
                              "jited bytes": r["jited_bytes"]} for r in d["objects"]],
                         title="Verifier accepted")
        render.emit(a, out, human)
