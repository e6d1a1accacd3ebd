"""nexusctl config validate FILE / config show."""
from __future__ import annotations

from pathlib import Path

import typer
import yaml

from nexusctl import render
from nexusctl.config import load_config

app = typer.Typer(help="Check and print configs.", no_args_is_help=True)


@app.command("validate")
def validate_cmd(ctx: typer.Context, file: Path = typer.Argument(..., help="YAML config to check")):
    """Check a config; errors name file:line and the field (exit 2).

    Unknown keys are rejected. Nothing on the host is touched.

    \b
    Examples:
      nexusctl config validate /etc/nexus/nexus.yaml
      nexusctl --json config validate new.yaml || echo "fix it first"
    """
    a = ctx.obj
    cfg = load_config(file)
    data = {"valid": True, "file": str(file), "interfaces": [i.key for i in cfg.interfaces],
            "policies": len(cfg.policies), "blocklists": len(cfg.blocklists)}
    render.emit(a, data, lambda d: a.out.print(f"[green]ok[/green]: {file} is a valid nexus config "
                                               f"({len(cfg.interfaces)} interface(s), {len(cfg.policies)} rule(s))"))


@app.command("show")
def show_cmd(ctx: typer.Context):
    """Print the effective config (defaults filled in) and where it came from.

    Lookup order: -c FILE, $NEXUS_CONFIG, /etc/nexus/nexus.yaml, the packaged
    configs/nexus.yaml.

    \b
    Examples:
      nexusctl config show
      nexusctl -c lab.yaml --json config show | jq .interfaces
    """
    a = ctx.obj
    cfg = a.config
    data = cfg.model_dump(mode="json")
    if a.json:
        render.emit(a, {"source": cfg.source, "config": data})
    else:
        a.err.print(f"[dim]# effective config from {cfg.source}[/dim]")
        print(yaml.safe_dump(data, sort_keys=False), end="")
