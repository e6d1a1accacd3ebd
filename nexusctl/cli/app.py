"""nexusctl's entry point: global flags, command registration, and the one
place exceptions become exit codes."""
from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from nexusctl import __version__
from nexusctl.app import App
from nexusctl.errors import ExitCode, NexusError

HELP = """eBPF DNS security and TLS observability, driven from YAML.

Builds, loads, attaches, inspects and tunes the nexus BPF programs.
Global flags may come before or after the command.

\b
Examples:
  nexusctl lab up                     # the self-contained demo topology
  nexusctl -c /etc/nexus/nexus.yaml up
  nexusctl --json status
  nexusctl --dry-run down
"""

app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]})

GLOBAL_FLAGS = {"--json", "--dry-run", "-v", "--verbose"}
GLOBAL_WITH_VALUE = {"-c", "--config"}


def _version(value: bool):
    if value:
        print(f"nexusctl {__version__}")
        raise typer.Exit()


@app.callback()
def _globals(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "-c", "--config", help="config file (default: $NEXUS_CONFIG, "
                                          "/etc/nexus/nexus.yaml, then the packaged configs/nexus.yaml)"),
    json_out: bool = typer.Option(False, "--json", help="print exactly one JSON document on stdout"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the ordered plan and change nothing"),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="show each command run and verifier log tails"),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version"),
):
    ctx.obj = App(config_path=config, json=json_out, dry_run=dry_run, verbose=verbose)


def _register() -> None:
    from nexusctl.cli import build, config, deploy, doctor, lab, maps, stats
    for mod in (build, deploy, doctor, stats):
        mod.register(app)
    app.add_typer(maps.app, name="maps")
    app.add_typer(lab.app, name="lab")
    app.add_typer(config.app, name="config")
    for extra in ("policy", "cache", "cert", "metrics", "enforce", "gc", "bench"):
        try:
            mod = __import__(f"nexusctl.cli.{extra}", fromlist=["register"])
        except ModuleNotFoundError as e:
            if e.name != f"nexusctl.cli.{extra}":
                raise
            continue
        mod.register(app)


_register()


def hoist_globals(argv: list[str]) -> list[str]:
    """Move global flags found after the command to the front, so `nexusctl status --json`
    works like `nexusctl --json status`. Arguments after `--` are left alone."""
    front, rest = [], []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            rest.extend(argv[i:])
            break
        if a in GLOBAL_FLAGS:
            front.append(a)
        elif a in GLOBAL_WITH_VALUE and i + 1 < len(argv):
            front.extend([a, argv[i + 1]])
            i += 1
        elif any(a.startswith(f + "=") for f in ("--config",)):
            front.append(a)
        else:
            rest.append(a)
        i += 1
    return front + rest


def main(argv: list[str] | None = None) -> None:
    argv = hoist_globals(list(sys.argv[1:] if argv is None else argv))
    want_json = "--json" in argv
    verbose = "-v" in argv or "--verbose" in argv
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    code = ExitCode.OK
    try:
        rv = app(args=argv, prog_name="nexusctl", standalone_mode=False)
        code = rv if isinstance(rv, int) else ExitCode.OK
    except typer.Exit as e:
        code = e.exit_code
    except typer.Abort:
        err.print("aborted")
        code = 130
    except typer.TyperException as e:       # usage errors from the argument parser
        ectx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError":
            err.print(e.format_message(), markup=False, highlight=False)
        else:
            err.print(f"[red]error:[/red] {e.format_message()}", highlight=False)
            if ectx is not None:
                err.print(f"[dim]{ectx.get_usage()}\nTry `{ectx.command_path} --help`.[/dim]", highlight=False)
        if want_json:
            print(json.dumps({"error": e.format_message(), "exit_code": int(ExitCode.USAGE), "changed": False}))
        code = ExitCode.USAGE
    except NexusError as e:
        _render_error(err, e, verbose, want_json)
        code = e.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        code = 130
    except Exception as e:  # noqa: BLE001 - the one place a bug becomes a message
        if verbose:
            err.print(traceback.format_exc(), markup=False)
        err.print(f"[red]error:[/red] unexpected {type(e).__name__}: {e}"
                  + ("" if verbose else " (run with -v for details)"), highlight=False)
        if want_json:
            print(json.dumps({"error": f"unexpected {type(e).__name__}: {e}", "exit_code": 1}))
        code = ExitCode.FAILED
    sys.stdout.flush()
    sys.exit(int(code))


def _render_error(err: Console, e: NexusError, verbose: bool, want_json: bool) -> None:
    err.print(f"[red]error:[/red] {escape(e.message)}", highlight=False, markup=True)
    if e.hint:
        err.print(f"[dim]fix:[/dim] {escape(e.hint)}", highlight=False)
    if verbose and e.details:
        err.print(e.details, markup=False, highlight=False)
    if want_json:
        doc = e.to_json()
        result = getattr(e, "result", None)
        doc["changed"] = bool(result is not None and getattr(result, "changed", False))
        if result is not None and hasattr(result, "to_json"):
            doc["actions"] = result.to_json().get("actions", [])
        out = getattr(e, "out", None)
        if isinstance(out, dict):
            doc.update({k: v for k, v in out.items() if k not in doc})
        print(json.dumps(doc, default=str))


if __name__ == "__main__":
    main()
