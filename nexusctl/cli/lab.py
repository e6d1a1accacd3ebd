"""nexusctl lab up / down / status: the self-contained demo and test topology."""
from __future__ import annotations

import typer

from nexusctl import render
from nexusctl.ops import lab as core

app = typer.Typer(help="The lab: nexus-srv/nexus-cli namespaces, unbound serving lab.test., nexus on nx-srv0.",
                  no_args_is_help=True)


@app.command("up")
def up_cmd(ctx: typer.Context,
           no_nexus: bool = typer.Option(False, "--no-nexus", help="topology and resolver only")):
    """Build the lab and bring nexus up on nx-srv0 with configs/lab.yaml. Idempotent.

    Two namespaces (nexus-srv, nexus-cli) joined by a veth pair, unbound in
    nexus-srv serving lab.test. (h1…h1000), nexus on nx-srv0. NEXUS_LAB_ID=x
    makes a second, independent lab (suffixed names, its own pin root).

    \b
    Examples:
      nexusctl lab up
      ip netns exec nexus-cli dig @198.18.0.1 h7.lab.test
      NEXUS_LAB_ID=x nexusctl lab up --no-nexus
    """
    a = ctx.obj
    data = core.lab_up(a, with_nexus=not no_nexus)

    def human(d):
        for c in d["created"]:
            a.out.print(f" [green]✔[/green] created {c}")
        if d["resolver_started"]:
            a.out.print(f" [green]✔[/green] unbound serving lab.test. on {', '.join(d['resolver'])}")
        if "nexus" in d:
            n = d["nexus"]
            a.out.print(f" {'[green]✔[/green] nexus up' if n['changed'] else '· nexus already up'} on "
                        f"{d['server_if']} (netns {d['server_netns']})")
            for w in n.get("warnings", []):
                a.warn(w)
        a.out.print(f"lab ready. Try: ip netns exec {d['client_netns']} dig @{d['resolver'][0]} h7.lab.test")
        a.out.print(f"config: {d['config']}   (nexusctl lab down removes everything)")
    render.emit(a, data, human)


@app.command("down")
def down_cmd(ctx: typer.Context):
    """Remove the lab: nexus down, resolver stopped, namespaces deleted. Idempotent.

    \b
    Examples:
      nexusctl lab down
      NEXUS_LAB_ID=x nexusctl --json lab down | jq .changed
    """
    a = ctx.obj
    data = core.lab_down(a)
    render.emit(a, data, lambda d: a.out.print("lab removed." if d["changed"] else "no lab to remove."))


@app.command("status")
def status_cmd(ctx: typer.Context):
    """Is the lab up: namespaces, resolver, nexus (exit 1 when it is not).

    \b
    Examples:
      nexusctl lab status
      nexusctl --json lab status | jq .up
    """
    a = ctx.obj
    data = core.lab_status(a)

    def human(d):
        for ns, ok in d["netns"].items():
            a.out.print(f" {'[green]✔[/green]' if ok else '[red]✘[/red]'} netns {ns}")
        a.out.print(f" {'[green]✔[/green]' if d['resolver_pid'] else '[red]✘[/red]'} unbound"
                    + (f" (pid {d['resolver_pid']})" if d["resolver_pid"] else ""))
        a.out.print(f" {'[green]✔[/green]' if d['nexus_up'] else '[red]✘[/red]'} nexus pins at {d['pin_root']}")
    render.emit(a, data, human)
    return 0 if data["up"] else 1
