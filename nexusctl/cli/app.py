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


# Command modules, each with register(app). Only the module of the command being
# run is imported (a command line is parsed before anything else is loaded), which
# keeps `nexusctl status` quick; help and completion load them all.
MODULES = ("build", "deploy", "doctor", "stats", "maps", "lab", "config", "policy", "cache", "cert",
           "metrics", "enforce", "gc", "bench")
COMMAND_MODULE = {"build": "build", "verify": "build", "up": "deploy", "apply": "deploy", "down": "deploy",
                  "reload": "deploy", "status": "deploy", "doctor": "doctor", "stats": "stats", "maps": "maps",
                  "lab": "lab", "config": "config", "policy": "policy", "cache": "cache", "cert": "cert",
                  "ct": "cert", "metrics": "metrics", "enforce": "enforce", "gc": "gc", "bench": "bench"}
_registered: set[str] = set()


def _register(only: str | None = None) -> None:
    for name in ([only] if only else MODULES):
        if name in _registered:
            continue
        try:
            mod = __import__(f"nexusctl.cli.{name}", fromlist=["register"])
        except ModuleNotFoundError as e:
            if e.name != f"nexusctl.cli.{name}":
                raise
            continue
        if hasattr(mod, "register"):
            mod.register(app)
        else:                       # a group module exposing its Typer app
            app.add_typer(mod.app, name=name)
        _registered.add(name)


def command_word(argv: list[str]) -> str | None:
    """The command of a (hoisted) command line: the first word after the global options."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in GLOBAL_WITH_VALUE:
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        return a
    return None


def register_for(argv: list[str]) -> None:
    word = command_word(argv)
    helpish = any(a in ("-h", "--help", "--install-completion", "--show-completion") for a in argv)
    if word in COMMAND_MODULE and not (helpish and word is None) and "_TYPER_COMPLETE_ARGS" not in os.environ \
            and not any(k.endswith("_COMPLETE") for k in os.environ):
        _register(COMMAND_MODULE[word])
    else:
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
    register_for(argv)
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
