"""nexusctl cert watch / events / verify, and nexusctl ct logs."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from nexusctl import render
from nexusctl.errors import UsageError
from nexusctl.ops import cert as core

app = typer.Typer(help="TLS certificate observation and CT verification.", no_args_is_help=True)
ct_app = typer.Typer(help="Certificate Transparency log list.", no_args_is_help=True)

VERDICT_STYLE = {"allow": "green", "warn": "yellow", "block": "red", "unknown": "dim"}
EVENT_COLUMNS = ["time", "pid", "comm", "sni", "sha256", "verdict", "threat_level", "flags", "scts"]


def _short(ev: dict) -> dict:
    row = {k: ev.get(k) for k in EVENT_COLUMNS}
    row["sha256"] = (ev.get("sha256") or "-")[:16]
    row["flags"] = ",".join(ev.get("flags") or []) or "-"
    s = ev.get("scts") or {}
    row["scts"] = f"{s.get('valid', 0)}/{s.get('embedded', 0)}"
    row["sni"] = ev.get("sni") or "-"
    return row


def _line(a, ev: dict) -> None:
    v = ev.get("verdict", "unknown")
    style = VERDICT_STYLE.get(v, "")
    s = ev.get("scts") or {}
    extra = " [red]KILLED[/red]" if ev.get("killed") else ""
    err = f" ({escape(ev['error'])})" if ev.get("error") else ""
    a.out.print(f"{ev.get('time')} pid {ev.get('pid')} ({escape(ev.get('comm') or '?')}) "
                f"sni={escape(ev.get('sni') or '-')} sha256={(ev.get('sha256') or '-')[:16]} "
                f"[{style}]{v}[/{style}] threat {ev.get('threat_level')} "
                f"[{escape(','.join(ev.get('flags') or []))}] scts {s.get('valid', 0)}/{s.get('embedded', 0)}"
                f"{extra}{err}", highlight=False)


@app.command("watch")
def watch_cmd(ctx: typer.Context,
              max_events: Optional[int] = typer.Option(None, "--max-events", min=1,
                                                       help="stop after this many verdicts"),
              duration: Optional[float] = typer.Option(None, "--duration", min=0.1, help="stop after SECONDS"),
              pid: Optional[List[int]] = typer.Option(None, "--pid", help="judge only this process (repeatable)")):
    """Run the agent in the foreground: judge every certificate the uprobes
    capture, write verdicts to the pinned maps, log them for `cert events`.

    Stops on SIGTERM/SIGINT (or --max-events/--duration). With --json, one
    document at the end: counters, stats and the events of the run.

    \b
    Examples:
      nexusctl cert watch
      nexusctl --json cert watch --duration 60 --pid 4242
    """
    a = ctx.obj
    if a.dry_run:
        raise UsageError("cert watch changes nothing by itself; --dry-run does not apply",
                         "run `nexusctl --dry-run up` to see what the observer attaches")
    if not a.json:
        a.info("watching TLS certificates (Ctrl-C to stop)")
    data = core.watch(a, max_events=max_events, duration=duration,
                      on_event=None if a.json else (lambda ev: _line(a, ev)), pids=set(pid) if pid else None)
    render.emit(a, data, lambda d: a.info(
        f"stopped: {d['stats']['events']} verdict(s), {d['stats']['repeats']} repeat(s); counters: "
        + ", ".join(f"{k}={v}" for k, v in d["counters"].items() if v)))


@app.command("events")
def events_cmd(ctx: typer.Context,
               limit: int = typer.Option(100, "--limit", "-n", min=1, help="the N most recent"),
               pid: Optional[int] = typer.Option(None, "--pid", help="only this process"),
               sha256: Optional[str] = typer.Option(None, "--sha256", help="only this certificate"),
               verdict: Optional[str] = typer.Option(None, "--verdict", help="allow | warn | block | unknown")):
    """Recent verdicts of the agent (oldest first).

    \b
    Examples:
      nexusctl cert events --verdict block
      nexusctl --json cert events -n 10 | jq '.[].sha256'
    """
    a = ctx.obj
    if verdict and verdict not in core.VERDICT_NAMES:
        raise UsageError(f"--verdict must be one of {', '.join(core.VERDICT_NAMES)}")
    rows = core.events(a, limit, pid, sha256, verdict)
    render.emit(a, rows, lambda r: render.table(a, [_short(e) for e in r], title="Certificate events",
                                                 columns=EVENT_COLUMNS))


@app.command("verify")
def verify_cmd(ctx: typer.Context,
               files: List[Path] = typer.Argument(..., help="PEM (leaf first, then its chain) or DER; "
                                                            "more files add to the chain"),
               sni: Optional[str] = typer.Option(None, "--sni", help="the name a client asked for"),
               log_list: Optional[Path] = typer.Option(None, "--log-list", help="CT log list (else ct.log_list)"),
               trust_store: Optional[Path] = typer.Option(None, "--trust-store",
                                                          help="CA bundle (else cert.trust_store)"),
               at: Optional[datetime] = typer.Option(None, "--at", help="judge as of this time (UTC)"),
               fail_on: str = typer.Option("never", "--fail-on", help="exit 1 on: never | warn | block")):
    """Judge a certificate file offline, as the agent would: flags, SCTs
    (verified against the log list), threat level, verdict. No root, no kernel.

    \b
    Examples:
      nexusctl cert verify server.pem --sni www.example.test
      nexusctl --json cert verify leaf.der intermediate.pem --fail-on block
    """
    a = ctx.obj
    if fail_on not in ("never", "warn", "block"):
        raise UsageError("--fail-on must be never, warn or block")
    when = at.replace(tzinfo=timezone.utc) if at and at.tzinfo is None else at
    res = core.verify(a, files, sni, log_list, trust_store, when)
    render.emit(a, res, lambda r: _human_verify(a, r))
    bad = {"never": (), "warn": ("warn", "block"), "block": ("block",)}[fail_on]
    if res["verdict"] in bad:
        raise typer.Exit(1)


def _human_verify(a, r: dict) -> None:
    v = r["verdict"]
    style = VERDICT_STYLE.get(v, "")
    a.out.print(f"[bold]{escape(r['file'])}[/bold]: [{style}]{v}[/{style}] (threat level {r['threat_level']})")
    for k in ("sha256", "subject", "issuer", "serial", "not_before", "not_after", "sni", "trusted_by", "error"):
        if r.get(k) is not None:
            a.out.print(f"  {k:<11} {escape(str(r[k]))}", highlight=False)
    a.out.print(f"  {'flags':<11} {', '.join(r['flags']) or '-'}")
    s = r["scts"]
    a.out.print(f"  {'scts':<11} {s['embedded']} embedded, {s['valid']} valid, {s['invalid']} invalid, "
                f"{s['unknown']} unknown log, {s['unusable']} unusable; {s['operators']} operator(s); "
                f"policy: {'-' if s['compliant'] is None else 'met' if s['compliant'] else 'not met'}")
    for row in s["logs"]:
        a.out.print(f"    {row['timestamp']} {escape(row['log'] or row['log_id'])}: {row['status']}",
                    highlight=False)


@ct_app.command("logs")
def ct_logs_cmd(ctx: typer.Context,
                log_list: Optional[Path] = typer.Option(None, "--log-list", help="a log list (else ct.log_list)")):
    """The CT logs of the configured log list (Chrome v3 JSON).

    \b
    Examples:
      nexusctl ct logs
      nexusctl --json ct logs --log-list /etc/nexus/log_list.json
    """
    a = ctx.obj
    data = core.ct_logs(a, log_list)
    render.emit(a, data, lambda d: render.table(
        a, [{"operator": x["operator"], "description": x["description"], "log_id": x["log_id"],
             "key": x["key_type"], "state": x["state"] or "-", "tiled": x["tiled"]} for x in d["logs"]],
        title=f"CT logs ({d['log_list']}, {len(d['logs'])} logs, {len(d['operators'])} operators)"))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="cert")
    root.add_typer(ct_app, name="ct")
