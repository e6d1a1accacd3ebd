"""nexusctl stats [--watch]: one screen of counters with rates, latency
histograms as bars with p50/p90/p99, top processes, interfaces, CPU samples
and map fill levels."""
from __future__ import annotations

import contextlib
import time
from typing import Optional

import typer
from rich.columns import Columns
from rich.console import Group
from rich.table import Table
from rich.text import Text

from nexusctl import render
from nexusctl.errors import UsageError
from nexusctl.ops import stats as core

BAR_WIDTH = 32
BLOCKS = " ▏▎▍▌▋▊▉█"
HUMAN_TOP = 10


def fmt_ns(ns: float | None) -> str:
    if ns is None:
        return "-"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.0f} ns"


def fmt_us(us: float | None) -> str:
    return "-" if us is None else fmt_ns(us * 1000)


def fmt_num(n: float) -> str:
    if n >= 10_000_000:
        return f"{n / 1e6:,.1f}M"
    return f"{n:,.0f}" if n >= 100 or n == int(n) else f"{n:,.1f}"


def fmt_bytes(n: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def bar(frac: float, width: int = BAR_WIDTH) -> str:
    frac = min(max(frac, 0.0), 1.0)
    eighths = round(frac * width * 8)
    full, part = divmod(eighths, 8)
    return "█" * full + (BLOCKS[part] if part else "")


def _rate(r: dict | None, section: str, key, fmt=fmt_num) -> str:
    if not r:
        return ""
    v = r.get(section, {}).get(key)
    return "" if v is None else f"{fmt(v)}/s"


def _counter_table(title: str, values: dict, rates: dict | None, section: str, names: dict | None = None) -> Table:
    t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    t.add_column("counter", no_wrap=True)
    t.add_column("total", justify="right")
    t.add_column("rate", justify="right", style="cyan")
    for k, v in values.items():
        src = (names or {}).get(k, k)
        t.add_row(k, fmt_num(v), _rate(rates, section, src))
    return t


def _latency(d: dict) -> list:
    out = []
    lat = d["latency_us"]
    shown = [("dns", lat["dns"])] + [(k, v) for k, v in lat.items() if k != "dns"]
    if not lat["dns"]["count"]:
        return [Text("Latency: no answered queries measured yet", style="dim")]
    for name, s in shown:
        if not s["count"]:
            continue
        head = Text.assemble((f"Latency {name}", "bold"), f"  {s['count']:,} answers   ",
                             ("p50 ", "dim"), fmt_us(s["p50"]), ("   p90 ", "dim"), fmt_us(s["p90"]),
                             ("   p99 ", "dim"), fmt_us(s["p99"]), ("   mean ", "dim"), fmt_us(s["mean"]))
        t = Table(show_header=False, show_edge=False, box=None, pad_edge=False)
        t.add_column(justify="right")
        t.add_column()
        t.add_column(justify="right")
        t.add_column(justify="right", style="dim")
        peak = max(b["count"] for b in s["buckets"])
        for b in s["buckets"]:
            t.add_row(f"{fmt_us(b['from_us'])} – {fmt_us(b['to_us'])}", Text(bar(b["count"] / peak), style="green"),
                      f"{b['count']:,}", f"{100 * b['count'] / s['count']:.1f}%" if s["count"] else "")
        out += [head, t]
    return out


def _processes(d: dict, rates: dict | None, top: int) -> Table:
    t = Table(title=f"Top processes by DNS queries (of {len(d['processes'])} seen)", title_justify="left")
    for c in ("pid", "comm", "dns queries", "rate", "tls conns", "certs", "dns denied", "idle"):
        t.add_column(c, justify="left" if c == "comm" else "right", style="cyan" if c == "rate" else None)
    for p in d["processes"][:top]:
        r = (rates or {}).get("processes", {}).get(p["pid"])
        t.add_row(str(p["pid"]), p["comm"], fmt_num(p.get("dns_queries", 0)), f"{fmt_num(r)}/s" if r is not None else "",
                  fmt_num(p.get("tls_connections", 0)), fmt_num(p.get("cert_validations", 0)),
                  fmt_num(p.get("dns_denied", 0)), f"{p['idle_s']:.0f} s" if "idle_s" in p else "")
    return t


def _interfaces(d: dict, rates: dict | None, top: int) -> Table:
    t = Table(title=f"Received per interface (of {len(d['interfaces'])})", title_justify="left")
    for c in ("interface", "netns", "packets", "pkts/s", "bytes", "bytes/s"):
        t.add_column(c, justify="left" if c in ("interface", "netns") else "right",
                     style="cyan" if c.endswith("/s") else None)
    for i in d["interfaces"][:top]:
        r = (rates or {}).get("interfaces", {}).get((i["ifindex"], i["netns_ino"]))
        t.add_row(i["name"], i["netns"] or "(host)", fmt_num(i["rx_packets"]),
                  f"{fmt_num(r['rx_packets'])}" if r else "", fmt_bytes(i["rx_bytes"]),
                  fmt_bytes(r["rx_bytes"]) if r else "")
    return t


def _cpu(d: dict, rates: dict | None) -> Table:
    cpu = d["cpu"]
    t = Table(title=f"CPU sampling ({cpu['sample_frequency']} Hz per CPU)", title_justify="left")
    for c in ("event", "samples", "rate", "in nexus", "share", "programs hit"):
        t.add_column(c, justify="left" if c in ("event", "programs hit") else "right",
                     style="cyan" if c == "rate" else None)
    for e in cpu["events"]:
        if not e["available"]:
            t.add_row(e["event"], Text("unavailable", style="yellow"), "", "", "",
                      Text(e["reason"].split(";")[0] + ")" if ";" in e["reason"] else e["reason"], style="dim"))
            continue
        share = f"{100 * e['in_nexus'] / e['samples']:.2f}%" if e["samples"] else ""
        progs = ", ".join(f"{k} {v}" for k, v in list(e["programs"].items())[:4])
        t.add_row(e["event"], fmt_num(e["samples"]), _rate(rates, "cpu", e["event"]), fmt_num(e["in_nexus"]),
                  share, progs)
    return t


def _maps(d: dict) -> Table:
    t = Table(title="Map fill", title_justify="left")
    for c in ("map", "type", "entries", "max", "fill", ""):
        t.add_column(c, justify="left" if c in ("map", "type", "") else "right")
    for m in d.get("maps", []):
        if m["type"] in ("array", "percpu_array"):
            continue            # always "full": fill says nothing
        fill = m["fill"]
        style = "red" if fill and fill > 0.9 else ("yellow" if fill and fill > 0.7 else "green")
        t.add_row(m["name"], m["type"], "-" if m["entries"] is None else fmt_num(m["entries"]),
                  fmt_num(m["max_entries"]), "-" if fill is None else f"{100 * fill:.1f}%",
                  Text(bar(fill or 0, 20), style=style))
    return t


def screen(d: dict, rates: dict | None, top: int):
    head = Text.assemble(("nexus stats", "bold"), "  ",
                         ("up" if d["up"] else "not up (run `nexusctl up`)", "green" if d["up"] else "red"),
                         f"   {time.strftime('%H:%M:%S', time.localtime(d['time']))}",
                         (f"   rates over {rates['interval_s']:.1f} s" if rates else "   (no rates: one sample)", "dim"))
    policy_names = dict(core.POLICY_FIELDS)
    row = [_counter_table("DNS", d["dns"], rates, "counters"),
           _counter_table("Policy", d["policy"], rates, "counters", policy_names)]
    if d["host"]:
        row.append(_counter_table("Host (tracepoints)", d["host"], rates, "host"))
    counters = Columns(row, padding=(1, 4))
    parts = [head, counters, *_latency(d), _processes(d, rates, top)]
    if d["interfaces"]:
        parts.append(_interfaces(d, rates, top))
    if d.get("programs"):
        parts.append(_costs(d))
    parts.append(_cpu(d, rates))
    from nexusctl.cli.enforce import stats_tables
    parts.extend(stats_tables(d))
    if d.get("maps"):
        parts.append(_maps(d))
    return Group(*parts)


def _costs(d: dict) -> Table:
    t = Table(title="Program cost (BPF run-time stats over the interval; % of one CPU)", title_justify="left")
    for c in ("program", "type", "runs/s", "ns/run", "cpu"):
        t.add_column(c, justify="left" if c in ("program", "type") else "right")
    for p in d["programs"]:
        t.add_row(p["name"], p["type"], fmt_num(p["runs_per_s"]),
                  "-" if p["avg_ns"] is None else f"{p['avg_ns']:,.0f}", f"{p['cpu_pct']:.3f}%")
    return t


def _sample(a, top, prev: dict | None, cost: bool) -> tuple[dict, dict | None]:
    """A stats() document (with "programs" costs when asked) and the rates since prev."""
    cur = core.stats(a, top, with_programs=cost)
    if cost and prev is not None:
        cur["programs"] = core.program_costs(prev["_programs"], cur["_programs"], cur["time"] - prev["time"])
    return cur, (core.rates(prev, cur) if prev is not None else None)


def _public(d: dict) -> dict:
    return {k: v for k, v in d.items() if not k.startswith("_")}


def register(app: typer.Typer) -> None:
    @app.command("stats")
    def stats_cmd(ctx: typer.Context,
                  watch: bool = typer.Option(False, "--watch", "-w", help="refresh in place until Ctrl-C"),
                  interval: float = typer.Option(1.0, "--interval", min=0.0,
                                                 help="seconds between samples (rates); 0: one sample, no rates"),
                  top: Optional[int] = typer.Option(None, "--top", min=1,
                                                    help=f"processes shown (default: {HUMAN_TOP}; all with --json)"),
                  cost: bool = typer.Option(False, "--cost",
                                            help="measure each nexus program's CPU time over the interval "
                                                 "(turns on BPF run-time stats, ~20 ns per run, while stats runs)")):
        """Counters with rates, latency histograms, top processes, interfaces, CPU samples, map fill.

        Reads the pinned per-CPU maps and sums them; names come from the BTF of
        the objects, so a counter added in C shows up here without a Python edit.
        --json prints the contract's document once (absolute counters and "time";
        compute rates from two of them; with --cost it samples over --interval
        and adds "programs").

        \b
        JSON (--json): {"dns": {"queries", "blocked", "rate_limited", ...},
          "policy": {...}, "latency_us": {"dns": {"count", "p50", "p99",
          "buckets"}}, "processes": [{"pid", "comm", "dns_queries", ...}]}

        \b
        Examples:
          nexusctl stats
          nexusctl stats --watch --cost            # refresh until Ctrl-C
          nexusctl --json stats --top 20 | jq .dns.queries
        """
        a = ctx.obj
        if cost and interval <= 0:
            raise UsageError("--cost measures over an interval", "use --interval SECONDS (> 0)")
        with (core.RunTimeStats(a) if cost else contextlib.nullcontext()):
            if a.json:
                doc = core.stats(a, top, with_programs=cost)
                if cost:
                    time.sleep(interval)
                    doc, _ = _sample(a, top, doc, cost)
                render.emit(a, _public(doc))
                return 0
            shown = top or HUMAN_TOP
            prev = core.stats(a, with_maps=False, with_programs=cost) if interval > 0 else None
            if not watch:
                if prev is not None:
                    time.sleep(interval)
                cur, rates = _sample(a, None, prev, cost)
                a.out.print(screen(cur, rates, shown))
                return 0
            from rich.live import Live
            # the alternate screen, like top: the screen is taller than most terminals and is cropped
            with Live(console=a.out, auto_refresh=False, screen=True, redirect_stderr=False) as live:
                try:
                    while True:
                        time.sleep(max(interval, 0.1))
                        cur, rates = _sample(a, None, prev, cost)
                        live.update(screen(cur, rates, shown), refresh=True)
                        prev = cur
                except KeyboardInterrupt:
                    return 0
