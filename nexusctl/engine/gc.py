"""Garbage: nexus pins, attachments and state records that neither the config
nor the state accounts for (an interface that went away, an interrupted run's
staging pins, a link or program of a feature no longer configured, an XDP or
TC program of ours left on an interface after the state was lost).

Scope, so that gc never touches what is not this instance's:
- pins: only under this config's pin_root;
- attachments: only on interfaces in the network namespaces the config or the
  state names (the root namespace only when one of them is there), only nexus
  programs (name prefix nexus_, TC at nexus's pref), and never a program that
  is pinned under another bpffs directory (another nexus instance's).
"""
from __future__ import annotations

import os
from pathlib import Path

from nexusctl.config.model import Config
from nexusctl.engine import maplayout, observe
from nexusctl.engine.actions import Action, Ctx
from nexusctl.engine.build import object_path
from nexusctl.engine.kernel import STAGING_PREFIX, TC_PREF, DetachTc, DetachXdp, iface_key
from nexusctl.engine.objects import links as feature_links
from nexusctl.engine.objects import needed_objects, pin_dirs
from nexusctl.engine.state import State
from nexusctl.tools.runner import Runner, netns_path

LINK_STAGING_SUFFIX = "_staging"        # tools.perf.attach_pinned pins a new link beside the old one
OTHER_PINS_DEPTH = 4                    # how deep to look for other instances' pins under the bpffs mount


class RemovePin(Action):
    kind = "gc-unpin"

    def __init__(self, path: Path, why: str, what: str):
        self.path = path
        self.why = why
        self.what = what                # program | map | link
        self.reason = self.gc_why = why

    def describe(self) -> str:
        return f"unpin {self.what} {self.path}"

    def satisfied(self, ctx: Ctx) -> bool:
        return not self.path.exists()

    def apply(self, ctx: Ctx) -> None:
        ctx.runner.kernel_action(f"unlink {self.path} ({self.why})")
        self.path.unlink()
        if self.what == "link":
            ctx.state.links.pop(self.path.name, None)
            ctx.state.save()


class ForgetRecord(Action):
    """Drop a state record whose object is gone (the interface was deleted, the link pin removed)."""
    kind = "gc-forget"

    def __init__(self, section: str, key: str, why: str):
        self.section = section
        self.key = key
        self.reason = self.gc_why = why

    def describe(self) -> str:
        return f"forget {self.section[:-1]} {self.key} in the state"

    def satisfied(self, ctx: Ctx) -> bool:
        return self.key not in ctx.state.data.get(self.section, {})

    def apply(self, ctx: Ctx) -> None:
        ctx.state.data[self.section].pop(self.key, None)
        ctx.state.save()


def _pins(d: Path) -> list[Path]:
    return sorted(d.iterdir()) if d.is_dir() else []


def _pinned_prog_ids(runner: Runner, pins: list[Path]) -> dict[int, Path]:
    out = {}
    for p in pins:
        try:
            info = observe.pinned_prog(runner, p)
        except OSError:
            continue
        if info:
            out[info["id"]] = p
    return out


def _other_instances_progs(runner: Runner, pin_root: Path) -> dict[int, Path]:
    """Program ids pinned under the bpffs mount outside our pin_root (other nexus instances, tests, ...)."""
    mnt = observe.mount_of(pin_root)
    base = Path(mnt[0]) if mnt and mnt[1] == observe.BPF_FS else pin_root.parent
    out: dict[int, Path] = {}
    root_depth = len(base.parts)
    for dirpath, dirnames, filenames in os.walk(base):
        d = Path(dirpath)
        if d == pin_root or pin_root in d.parents:
            dirnames[:] = []
            continue
        if len(d.parts) - root_depth >= OTHER_PINS_DEPTH:
            dirnames[:] = []
        for f in filenames:
            p = d / f
            try:
                fd = runner.libbpf.obj_get(str(p))
            except OSError:
                continue
            try:
                info = runner.libbpf.prog_info(fd)
                out[info["id"]] = p
            except OSError:
                pass                        # a map or a link
            finally:
                os.close(fd)
    return out


def plan_gc(cfg: Config, state: State, runner: Runner) -> tuple[list[Action], list[dict]]:
    """(actions that remove the garbage, [{what, target, why}] found but kept)."""
    dirs = pin_dirs(cfg.pin_root)
    actions: list[Action] = []
    kept: list[dict] = []
    specs = needed_objects(cfg)

    # ---- programs
    wanted_progs = {p for s in specs for p in s.programs}
    recorded_progs = {p for o in state.objects.values() for p in o.get("programs", {})}
    live_progs = []
    for pin in _pins(dirs["progs"]):
        if pin.name.startswith(STAGING_PREFIX):
            actions.append(RemovePin(pin, "left by an interrupted load", "program"))
        elif pin.name not in wanted_progs | recorded_progs:
            actions.append(RemovePin(pin, "no configured object or state record has this program", "program"))
        else:
            live_progs.append(pin)

    # ---- links (before maps: a link keeps its program, and so its maps, alive)
    wanted_links = {s.name for s in feature_links(cfg)}
    for pin in _pins(dirs["links"]):
        if pin.name.endswith(LINK_STAGING_SUFFIX):
            actions.append(RemovePin(pin, "left by an interrupted attach", "link"))
        elif pin.name not in wanted_links and pin.name not in state.links:
            actions.append(RemovePin(pin, "no configured link or state record", "link"))
    for name, rec in state.links.items():
        if not (dirs["links"] / name).exists():
            actions.append(ForgetRecord("links", name, "its pin is gone"))

    # ---- maps: declared by a configured object, or used by a program we keep
    declared: set[str] = set()
    for s in specs:
        path = object_path(cfg.build_dir, s.name)
        if path.exists():
            declared |= {d.name for d in maplayout.declared_maps(path)}
    for o in state.objects.values():
        declared |= set(o.get("maps", {}))
    used: set[int] = set()
    L = runner.libbpf
    for pin in live_progs:
        try:
            fd = L.obj_get(str(pin))
        except OSError:
            continue
        try:
            used |= set(L.prog_map_ids(fd))
        finally:
            os.close(fd)
    for pin in _pins(dirs["maps"]):
        if pin.name.startswith(STAGING_PREFIX):
            actions.append(RemovePin(pin, "left by an interrupted map migration", "map"))
            continue
        info = observe.pinned_map(runner, pin)
        if pin.name not in declared and (info is None or info["id"] not in used):
            actions.append(RemovePin(pin, "no configured object declares it and no kept program uses it", "map"))

    # ---- state records of attachments on interfaces that are gone
    for key, rec in state.attachments.items():
        if not observe.link_exists(runner, rec["ifname"], rec.get("netns")):
            actions.append(ForgetRecord("attachments", key, f"interface {iface_key(rec['ifname'], rec.get('netns'))} "
                                        "is gone"))

    # ---- live nexus attachments nobody accounts for
    wanted_keys = set(state.attachments)
    namespaces: set[str | None] = {rec.get("netns") for rec in state.attachments.values()}
    for i in cfg.interfaces:
        namespaces.add(i.netns)
        if i.xdp:
            wanted_keys.add(f"xdp:{i.key}")
        if i.tc_egress:
            wanted_keys.add(f"tc-egress:{i.key}")
        if i.veth_peer:
            namespaces.add(i.veth_peer.netns)
            wanted_keys.add(f"xdp:{iface_key(i.veth_peer.name, i.veth_peer.netns)}")
    candidates = []
    for ns in sorted(namespaces, key=lambda n: n or ""):
        if ns and not netns_path(ns).exists():
            continue
        res = runner.run(["ip", "-j", "link", "show"], netns=ns, check=False, quiet=True)
        for link in (res.json() or []) if res.rc == 0 else []:
            ifname = link.get("ifname")
            if not ifname or ifname == "lo":
                continue
            key = iface_key(ifname, ns)
            xdp = observe.xdp_state(runner, ifname, ns) or {}
            if xdp.get("prog_id") and (xdp.get("prog_name") or "").startswith(observe.NEXUS_PROG_PREFIX) \
                    and f"xdp:{key}" not in wanted_keys:
                candidates.append(("xdp", ifname, ns, xdp["prog_id"], xdp["prog_name"]))
            for direction in ("egress", "ingress"):
                for f in observe.tc_filters(runner, ifname, ns, direction):
                    if f["pref"] == TC_PREF and (f["prog_name"] or "").startswith(observe.NEXUS_PROG_PREFIX) \
                            and f"tc-{direction}:{key}" not in wanted_keys:
                        candidates.append((f"tc-{direction}", ifname, ns, f["prog_id"], f["prog_name"]))
    if candidates:
        ours = _pinned_prog_ids(runner, live_progs)
        others = _other_instances_progs(runner, cfg.pin_root)
        for kind, ifname, ns, prog_id, name in candidates:
            target = iface_key(ifname, ns)
            if prog_id in others and prog_id not in ours:
                kept.append({"what": kind, "target": target, "why": f"{name} id {prog_id} is pinned at "
                             f"{others[prog_id]} (another nexus instance)"})
                continue
            why = f"{name} id {prog_id} is attached but no configured interface or state record accounts for it"
            a = DetachXdp(ifname, ns) if kind == "xdp" else DetachTc(ifname, ns, kind.split("-", 1)[1])
            a.iface = None
            a.gc_why = why
            actions.append(a)
    return actions, kept
