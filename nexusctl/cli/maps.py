"""nexusctl maps list / dump NAME / get NAME KEY."""
from __future__ import annotations

from typing import Optional

import typer

from nexusctl import render
from nexusctl.ops import maps as core

app = typer.Typer(help="Inspect pinned maps (BTF-decoded).", no_args_is_help=True)


@app.command("list")
def list_cmd(ctx: typer.Context):
    """Every pinned map with its type and fill level.

    \b
    JSON (--json): [{"name", "type", "id", "entries", "max_entries",
      "key_size", "value_size"}]

    \b
    Examples:
      nexusctl maps list
      nexusctl --json maps list | jq '.[] | select(.entries > 0) | .name'
    """
    a = ctx.obj
    rows = core.list_maps(a)
    render.emit(a, rows, lambda r: render.table(a, r, title="Pinned maps",
                                                 columns=["name", "type", "entries", "max_entries",
                                                          "key_size", "value_size"]))


@app.command("dump")
def dump_cmd(ctx: typer.Context, name: str = typer.Argument(..., help="map name (see maps list)"),
             per_cpu: bool = typer.Option(False, "--per-cpu", help="show per-CPU values instead of sums"),
             limit: Optional[int] = typer.Option(None, "--limit", min=1, help="at most N entries")):
    """All entries of a map, decoded with the BTF the kernel holds for it.

    Per-CPU values are summed unless --per-cpu. Keys of enum-indexed maps
    (the counters) are shown by name.

    \b
    Examples:
      nexusctl maps dump nexus_counters
      nexusctl maps dump nexus_latency --per-cpu
      nexusctl --json maps dump nexus_config | jq '.entries[0].value'
    """
    a = ctx.obj
    data = core.dump(a, name, per_cpu, limit)
    render.emit(a, data, lambda d: _human_dump(a, d))


def _human_dump(a, d):
    rows = []
    for e in d["entries"]:
        v = e["value"]
        row = {"key": e["key"]}
        if isinstance(v, dict):
            row.update(v)
        else:
            row["value"] = v
        rows.append(row)
    render.table(a, rows, title=f"{d['map']} ({d['type']}{', summed over CPUs' if d['percpu'] and not d['split_cpus'] else ''})")


@app.command("get")
def get_cmd(ctx: typer.Context, name: str = typer.Argument(...),
            key: str = typer.Argument(..., help="integer, enum name (e.g. queries), hex:BYTES, or JSON for a struct"),
            per_cpu: bool = typer.Option(False, "--per-cpu")):
    """One entry of a map.

    KEY is an integer, an enum name for enum-indexed maps, `hex:…` bytes, or
    JSON for struct keys.

    \b
    Examples:
      nexusctl maps get nexus_counters queries
      nexusctl maps get nexus_config 0
      nexusctl --json maps get nexus_counters cache_hits | jq .value
    """
    a = ctx.obj
    data = core.get(a, name, key, per_cpu)
    render.emit(a, data, lambda d: _human_dump(a, {**d, "entries": [d], "type": "entry", "percpu": False,
                                                   "split_cpus": per_cpu}))
