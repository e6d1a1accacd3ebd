"""nexusctl stats [--watch]."""
from __future__ import annotations

import time

import typer
from rich.table import Table

from nexusctl import render
from nexusctl.ops import stats as core


def _tables(d: dict):
    t = Table(title="DNS", title_justify="left")
    t.add_column("counter")
    t.add_column("value", justify="right")
    for k, v in d["dns"].items():
        t.add_row(k, f"{v:,}")
    p = Table(title="Policy", title_justify="left")
    p.add_column("action")
    p.add_column("queries", justify="right")
    for k, v in d["policy"].items():
        p.add_row(k, f"{v:,}")
    return [t, p]


def register(app: typer.Typer) -> None:
    @app.command("stats")
    def stats_cmd(ctx: typer.Context,
                  watch: bool = typer.Option(False, "--watch", "-w", help="refresh in place"),
                  interval: float = typer.Option(1.0, "--interval", min=0.1, help="seconds between refreshes")):
        """Counters, latency histograms, per-process figures (summed over CPUs).

        Reads the pinned per-CPU maps and sums them; names come from the BTF of
        the objects, so a counter added in C shows up here without a Python edit.

        \b
        JSON (--json): {"dns": {"queries", "blocked", "rate_limited", ...},
          "policy": {...}, "latency_us": {"dns": {"count", "p50", "p99",
          "buckets"}}, "processes": [{"pid", "comm", "dns_queries", ...}]}

        \b
        Examples:
          nexusctl stats
          nexusctl stats --watch                   # refresh until Ctrl-C
          nexusctl --json stats | jq .dns.queries
        """
        a = ctx.obj
        if watch and not a.json:
            from rich.console import Group
            from rich.live import Live
            with Live(console=a.out, auto_refresh=False) as live:
                try:
                    while True:
                        live.update(Group(*_tables(core.stats(a))), refresh=True)
                        time.sleep(interval)
                except KeyboardInterrupt:
                    return 0
        data = core.stats(a)
        render.emit(a, data, lambda d: [a.out.print(x) for x in _tables(d)])
