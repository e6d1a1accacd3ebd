"""nexusctl bench: the benchmark suite (also `make bench`, scripts/bench.py)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from nexusctl import render
from nexusctl.errors import UsageError
from nexusctl.ops import bench as core
from nexusctl.ops import bench_report as report
from nexusctl.paths import PROJECT_ROOT

VERDICT_STYLE = {"met": "green", "MISSED": "bold red", "pending": "yellow"}


def _default_out() -> Path:
    in_checkout = (PROJECT_ROOT / "bpf").exists() and os.access(PROJECT_ROOT, os.W_OK)
    return PROJECT_ROOT / "bench" if in_checkout else Path.cwd() / "bench"


def _table(doc: dict) -> Table:
    t = Table(title=f"nexus benchmarks — {doc.get('date', '')}", title_justify="left",
              caption=report.machine_line(doc), caption_justify="left")
    for col in ("scenario", "figure", "value", "target", "verdict"):
        t.add_column(col, overflow="fold")
    last = None
    for r in report.rows(doc):
        t.add_row(r["scenario"] if r["scenario"] != last else "", r["figure"], r["value"], r["target"],
                  Text(r["verdict"], style=VERDICT_STYLE.get(r["verdict"], "")))
        last = r["scenario"]
    return t


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench_cmd(
        ctx: typer.Context,
        quick: bool = typer.Option(False, "--quick", help="short run: fewer packets, one round each"),
        scenarios: str = typer.Option(",".join(core.SCENARIOS), "--scenarios",
                                      help=f"comma-separated subset of {','.join(core.SCENARIOS)}"),
        out: Optional[Path] = typer.Option(None, "--out", help="where results.json and results.png go "
                                           "(default: bench/ in the checkout)"),
        write_docs: bool = typer.Option(False, "--write-docs", help="regenerate the results block of "
                                        "docs/benchmarks.md"),
        keep_lab: bool = typer.Option(False, "--keep-lab", help="leave the bench's lab up afterwards"),
        packets: Optional[int] = typer.Option(None, "--packets", min=100, max=1_000_000,
                                              help="packets per kind per round (scenario 1)"),
        rounds: Optional[int] = typer.Option(None, "--rounds", min=1, max=20, help="rounds per measurement"),
        rate: Optional[int] = typer.Option(None, "--rate", min=1000, max=200_000,
                                           help="offered packets/s in scenarios 1 and 2 (default 20000)"),
    ):
        """Measure the kernel paths, the resolver alone and with nexus, policy scale and the CLI
        in one run, in the bench's own lab; write results.json, results.png and a table.

        Needs root. Turns BPF run-time stats on for the measurements only. Examples:
        make bench; nexusctl bench --quick; nexusctl bench --scenarios kernel,cpu --json
        """
        a = ctx.obj
        if a.dry_run:
            raise UsageError("bench has no dry run: it measures real traffic in its own lab")
        chosen = tuple(s.strip() for s in scenarios.split(",") if s.strip())
        params = core.Params.quick() if quick else core.Params()
        if packets:
            params.kind_packets = packets
        if rounds:
            params.rounds = params.kernel_rounds = rounds
        if rate:
            params.rate = rate
        opts = core.Options(quick=quick, scenarios=chosen, keep_lab=keep_lab, params=params)
        out_dir = out or _default_out()

        if a.interactive:
            with Progress(SpinnerColumn(), TextColumn("[bold]bench[/bold] {task.description}"), TimeElapsedColumn(),
                          console=a.err, transient=True) as prog:
                task = prog.add_task("starting")
                doc = core.run(a, opts, lambda s: prog.update(task, description=s))
        else:
            doc = core.run(a, opts)

        doc["targets"] = [t.to_json() for t in report.targets(doc)]
        out_dir.mkdir(parents=True, exist_ok=True)
        doc["files"] = {"json": str(out_dir / "results.json")}
        try:
            report.chart(doc, out_dir / "results.png")
            doc["files"]["png"] = str(out_dir / "results.png")
        except ImportError:
            a.warn("matplotlib is not installed: no chart (pip install 'nexusctl[bench]', or make setup)")
        if write_docs:
            docs = PROJECT_ROOT / "docs" / "benchmarks.md"
            report.write_docs(docs, doc)
            doc["files"]["docs"] = str(docs)
        report.write_json(out_dir / "results.json", doc)

        def human(d):
            a.out.print(_table(d))
            for name, err in d.get("errors", {}).items():
                a.warn(f"{name}: {err}")
            a.out.print("written: " + ", ".join(d["files"].values()))
        render.emit(a, doc, human)
        return 1 if doc.get("errors") else 0
