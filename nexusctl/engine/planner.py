"""Config + recorded state → the ordered list of actions for up and down."""
from __future__ import annotations

from nexusctl.config.model import Config
from nexusctl.engine.actions import Action
from nexusctl.engine.build import object_path, plan_build
from nexusctl.engine.kernel import (AttachTc, AttachXdp, DetachTc, DetachXdp, EnsureBpffs, EnsureClsact,
                                    EnsureDir, LoadObject, PrepareMaps, RemoveClsact, RemovePins, RemoveState,
                                    UnpinObject, WriteConfigMap, iface_key)
from nexusctl.engine import objects
from nexusctl.engine.links import AttachLink, DetachLink
from nexusctl.engine.objects import OBJECTS, map_sizes, needed_objects, pin_dirs
from nexusctl.engine.state import State
from nexusctl.paths import bpf_src_dir


def plan_up(cfg: Config, state: State, *, build: bool = True, reload: bool = False) -> list[Action]:
    """The actions that make the host match cfg. Each is checked against what is
    live when its turn comes, so only the difference runs. With reload, every
    needed object is loaded afresh and swapped in (maps kept when their layout is
    unchanged)."""
    dirs = pin_dirs(cfg.pin_root)
    actions: list[Action] = [EnsureDir(cfg.state_dir)]
    if build:
        actions += plan_build(bpf_src_dir(), cfg.build_dir)
    actions += [EnsureBpffs(cfg.pin_root), EnsureDir(cfg.pin_root)] + [EnsureDir(d) for d in dirs.values()]

    sizes = map_sizes(cfg)
    specs = needed_objects(cfg)
    objs = [(spec, object_path(cfg.build_dir, spec.name)) for spec in specs]
    if objs:
        actions.append(PrepareMaps(objs, cfg.pin_root, sizes))
    for spec, path in objs:
        actions.append(LoadObject(spec, path, cfg.pin_root, sizes, force=reload))
    for w in objects.config_writes(cfg):
        actions.append(WriteConfigMap(cfg.pin_root, object_path(cfg.build_dir, w.source), w.values,
                                      map_name=w.map_name, struct_name=w.struct_name, key=w.key))

    wanted: set[str] = set()
    for iface in cfg.interfaces:
        g = iface.key
        if iface.xdp:
            a = AttachXdp(iface.name, iface.netns, dirs["progs"] / "nexus_dns_xdp", iface.xdp_mode, iface=g)
            wanted.add(a.key)
            actions.append(a)
        if iface.tc_egress:
            c = EnsureClsact(iface.name, iface.netns, iface=g)
            t = AttachTc(iface.name, iface.netns, dirs["progs"] / "nexus_dns_tc", "egress", iface=g)
            wanted.update({c.key, t.key})
            actions += [c, t]
        if iface.veth_peer:
            p = AttachXdp(iface.veth_peer.name, iface.veth_peer.netns, dirs["progs"] / "nexus_xdp_pass",
                          "auto", role="veth-peer", iface=g)
            wanted.add(p.key)
            actions.append(p)

    actions += objects.extra_actions(cfg, state)
    link_specs = objects.links(cfg)
    for spec in link_specs:
        actions.append(AttachLink(spec, cfg.pin_root))
    wanted_links = {s.name for s in link_specs}

    # Converge: what the state records but the config no longer wants goes away.
    actions += _detach_actions(state, exclude=wanted)
    for name, rec in state.links.items():
        if name not in wanted_links:
            actions.append(DetachLink(name, cfg.pin_root, rec.get("target", "")))
    needed_names = {s.name for s in specs}
    for name in list(state.objects):
        if name not in needed_names:
            spec = next((o for o in OBJECTS if o.name == name), None)
            progs = spec.programs if spec else tuple(state.objects[name].get("programs", {}))
            actions.append(UnpinObject(name, progs, cfg.pin_root))
    return actions


def _detach_actions(state: State, exclude: set[str] = frozenset()) -> list[Action]:
    tc, xdp, clsact = [], [], []
    for key, rec in state.attachments.items():
        if key in exclude:
            continue
        kind = rec.get("kind")
        if kind in ("tc-egress", "tc-ingress"):
            tc.append(DetachTc(rec["ifname"], rec.get("netns"), kind.split("-", 1)[1]))
        elif kind == "xdp":
            xdp.append(DetachXdp(rec["ifname"], rec.get("netns")))
        elif kind == "clsact" and rec.get("created"):
            clsact.append(RemoveClsact(rec["ifname"], rec.get("netns")))
    return tc + clsact + xdp


def plan_down(cfg: Config, state: State) -> list[Action]:
    actions: list[Action] = [DetachLink(name, cfg.pin_root, rec.get("target", ""))
                             for name, rec in state.links.items()]
    actions += _detach_actions(state)
    recorded = {getattr(a, "key", None) for a in actions}
    # State lost or partial: still detach nexus programs from the configured interfaces
    # (the detach actions check the program is ours before touching anything).
    for iface in cfg.interfaces:
        extra: list[Action] = []
        if iface.tc_egress:
            extra.append(DetachTc(iface.name, iface.netns, "egress"))
        if iface.xdp:
            extra.append(DetachXdp(iface.name, iface.netns))
        if iface.veth_peer:
            extra.append(DetachXdp(iface.veth_peer.name, iface.veth_peer.netns))
        actions += [a for a in extra if a.key not in recorded]
    # down is all or nothing: pins must not go while a detach failed (the program would run on, unpinned).
    for a in actions:
        a.iface = None
    actions.append(RemovePins(cfg.pin_root))
    actions.append(RemoveState())
    return actions


def describe_targets(cfg: Config) -> list[str]:
    return [iface_key(i.name, i.netns) for i in cfg.interfaces]
