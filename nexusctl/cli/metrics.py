"""nexusctl metrics serve / textfile: Prometheus exposition of the stats figures."""
from __future__ import annotations

import sys
from typing import Optional

import typer

from nexusctl import render
from nexusctl.errors import UsageError
from nexusctl.ops import metrics as core

app = typer.Typer(help="Prometheus exposition of the stats figures (read from the pinned maps at each scrape).",
                  no_args_is_help=True)


@app.command("serve")
def serve_cmd(ctx: typer.Context,
              listen: Optional[str] = typer.Option(None, "--listen", "-l",
                                                   help="HOST:PORT (default: metrics.listen, 127.0.0.1:9435)")):
    """Serve /metrics over HTTP until Ctrl-C or SIGTERM.

    With --json, one line {"listening": URL} is printed when the socket is ready.
    Examples: nexusctl metrics serve; nexusctl metrics serve --listen [::1]:9435
    """
    a = ctx.obj
    host, port = core.listen_address(a, listen)

    def ready(url: str) -> None:
        if a.json:
            render.emit(a, {"listening": url, "changed": False})
        else:
            a.info(f"serving Prometheus metrics on {url} (Ctrl-C stops)")

    core.serve(a, host, port, on_ready=ready)
    return 0


@app.command("textfile")
def textfile_cmd(ctx: typer.Context,
                 path: str = typer.Argument(..., help="output file (node_exporter textfile collector: *.prom); "
                                                      "- prints to stdout")):
    """Write the exposition once, atomically, for node_exporter's textfile collector.

    \b
    Examples:
      nexusctl metrics textfile /var/lib/node_exporter/textfile/nexus.prom   # from cron
      nexusctl metrics textfile -                                            # to stdout
    """
    a = ctx.obj
    if path == "-":
        if a.json:
            raise UsageError("--json and `-` both want stdout", "give a file name, or drop --json")
        sys.stdout.write(core.exposition(a).decode())
        return 0
    data = core.textfile(a, path)
    render.emit(a, data, lambda d: a.info(f"wrote {d['path']} ({d['bytes']:,} bytes)"))
    return 0


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="metrics")
