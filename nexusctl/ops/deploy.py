"""up/apply, down, reload and status."""
from __future__ import annotations

from pathlib import Path

from nexusctl.engine import observe
from nexusctl.engine.executor import PlanResult, execute
from nexusctl.engine.kernel import STAGING_PREFIX, iface_key
from nexusctl.engine.objects import PROGRAM_OBJECT, pin_dirs
from nexusctl.engine.planner import plan_down, plan_up
from nexusctl.errors import OperationFailed
from nexusctl.ops.progress import plan_progress


def up(app, *, check: bool = False, diff: bool = False, title: str = "up") -> PlanResult:
    """Converge the host to the config: only what differs from what is live runs.
    check: plan only ("changed" then says whether anything would change);
    diff: each action carries {field: [live, wanted]}."""
    cfg = app.config
    with app.lock():
        ctx = app.ctx()
        actions = plan_up(cfg, ctx.state)
        with plan_progress(app, len(actions), title) as on_step:
            return execute(actions, ctx, dry_run=app.dry_run, check=check, diff=diff, on_step=on_step)


def down(app) -> PlanResult:
    cfg = app.config
    with app.lock():
        ctx = app.ctx()
        actions = plan_down(cfg, ctx.state)
        with plan_progress(app, len(actions), "down") as on_step:
            return execute(actions, ctx, dry_run=app.dry_run, on_step=on_step, rollback=False)


def _programs(state) -> dict[str, dict]:
    return {p: rec for o in state.objects.values() for p, rec in o.get("programs", {}).items()}


def _pinned_map_ids(app) -> dict[str, int]:
    d = pin_dirs(app.config.pin_root)["maps"]
    out = {}
    if d.exists():
        for pin in d.iterdir():
            if pin.name.startswith(STAGING_PREFIX):
                continue
            info = observe.pinned_map(app.runner, pin)
            if info:
                out[pin.name] = info["id"]
    return out


def reload(app, *, check: bool = False, diff: bool = False) -> PlanResult:
    """Load fresh programs and swap them in without a gap: each new program is pinned
    beside the old one and renamed over it, then XDP is replaced in one netlink call
    (`bpftool net attach … overwrite`), TC in one `tc filter replace` on the same
    pref/handle, and tracing links are attached anew before the old link's pin goes.
    Pinned maps are reused when their layout is unchanged, migrated when it changed."""
    cfg = app.config
    with app.lock():
        ctx = app.ctx()
        if not ctx.state.objects:
            raise OperationFailed(f"nothing to reload: no nexus programs are recorded in {ctx.state.path}",
                                  "bring nexus up first with `nexusctl up`")
        before, maps_before = _programs(ctx.state), _pinned_map_ids(app)
        actions = plan_up(cfg, ctx.state, reload=True)
        with plan_progress(app, len(actions), "reload") as on_step:
            res = execute(actions, ctx, dry_run=app.dry_run, check=check, diff=diff, on_step=on_step)
        if not res.dry_run:
            after, maps_after = _programs(ctx.state), _pinned_map_ids(app)
            res.extra["reloaded"] = [
                {"program": p, "old_id": before.get(p, {}).get("id"), "new_id": rec.get("id"), "tag": rec.get("tag")}
                for p, rec in sorted(after.items()) if before.get(p, {}).get("id") != rec.get("id")]
            res.extra["maps_kept"] = sorted(n for n, i in maps_after.items() if maps_before.get(n) == i)
            res.extra["maps_replaced"] = sorted(n for n, i in maps_after.items()
                                                if n in maps_before and maps_before[n] != i)
        return res


def _count_entries(L, path: Path, info: dict) -> int | None:
    try:
        with L.MapHandle.pinned(str(path)) as m:
            if info["type"] in ("ringbuf", "perf_event_array", "prog_array", "bloom_filter",
                                "array_of_maps", "hash_of_maps", "user_ringbuf"):
                return None
            return m.count(limit=4_000_000)
    except OSError:
        return None


def _feature_status(app, state, out: dict) -> None:
    """Fields features add to status (feature.status_fields(app, state) -> dict);
    their "notes" (human lines) are gathered in one list."""
    from nexusctl.features import FEATURES
    for f in FEATURES:
        if hasattr(f, "status_fields"):
            fields = dict(f.status_fields(app, state))
            out.setdefault("notes", []).extend(fields.pop("notes", []))
            out.update(fields)


def status(app) -> dict:
    cfg = app.config
    state = app.state()
    dirs = pin_dirs(cfg.pin_root)
    out = {"pin_root": str(cfg.pin_root), "up": cfg.pin_root.exists(), "programs": [], "maps": [],
           "warnings": []}
    _feature_status(app, state, out)
    lost = sorted(p for o in state.objects.values() for p in o.get("programs", {})
                  if not (dirs["progs"] / p).exists())
    if lost:
        where = cfg.pin_root if observe.on_bpffs(cfg.pin_root) else \
            f"{cfg.pin_root} (not on a BPF filesystem: was bpffs unmounted?)"
        out["warnings"].append(
            f"the state records {', '.join(lost)} but {where} holds no pin for "
            f"{'it' if len(lost) == 1 else 'them'}: attached programs keep running without their pins; "
            "`nexusctl up` loads and pins them again, `nexusctl down` detaches them")
    if not cfg.pin_root.exists() and not state.attachments:
        return out
    L = app.runner.libbpf

    # live attachments, checked against what the state recorded
    by_prog: dict[int, list[dict]] = {}
    for key, rec in sorted(state.attachments.items()):
        kind = rec.get("kind")
        target = iface_key(rec["ifname"], rec.get("netns"))
        if kind == "xdp":
            live = observe.xdp_state(app.runner, rec["ifname"], rec.get("netns"))
            if live is None:
                out["warnings"].append(f"{target}: interface is gone (was attached); run `nexusctl down` or `up`")
                continue
            if not live.get("prog_id"):
                out["warnings"].append(f"{target}: XDP program is no longer attached")
                continue
            att = {"kind": "xdp", "target": target, "mode": live.get("mode"), "prog_id": live["prog_id"],
                   "role": rec.get("role", "dns")}
            if rec.get("reason"):
                att["reason"] = rec["reason"]
            by_prog.setdefault(live["prog_id"], []).append(att)
        elif kind in ("tc-egress", "tc-ingress"):
            direction = kind.split("-", 1)[1]
            live = observe.tc_filters_or_none(app.runner, rec["ifname"], rec.get("netns"), direction)
            if live is None:
                out["warnings"].append(f"{target}: interface is gone (was attached)")
                continue
            fs = [f for f in live if f["pref"] == rec.get("pref")]
            if not fs:
                out["warnings"].append(f"{target}: tc {direction} filter is no longer attached")
                continue
            by_prog.setdefault(fs[0]["prog_id"], []).append(
                {"kind": kind, "target": target, "mode": None, "prog_id": fs[0]["prog_id"],
                 "pref": rec.get("pref")})
    from nexusctl.tools import perf
    for name, rec in sorted(state.links.items()):
        prog_id = perf.link_prog_id(rec.get("pin", ""))
        if prog_id is None:
            out["warnings"].append(f"link {name} ({rec.get('kind')} {rec.get('target')}) is gone")
            continue
        by_prog.setdefault(prog_id, []).append(
            {"kind": rec.get("kind"), "target": rec.get("target"), "mode": None, "prog_id": prog_id,
             "link": name})

    for pin, fd in observe.pinned_programs(app.runner, dirs["progs"]):
        info = L.prog_info(fd)
        out["programs"].append({
            "name": pin.name, "type": info["type"], "id": info["id"], "tag": info["tag"],
            "object": PROGRAM_OBJECT.get(pin.name), "verified_insns": info["verified_insns"],
            "run_cnt": info["run_cnt"], "run_time_ns": info["run_time_ns"],
            "attachments": [{k: v for k, v in a.items() if k != "prog_id"} for a in by_prog.get(info["id"], [])],
        })
    if dirs["maps"].exists():
        for pin in sorted(dirs["maps"].iterdir()):
            info = observe.pinned_map(app.runner, pin)
            if not info:
                continue
            out["maps"].append({"name": pin.name, "type": info["type"], "id": info["id"],
                                "entries": _count_entries(L, pin, info), "max_entries": info["max_entries"],
                                "key_size": info["key_size"], "value_size": info["value_size"]})
    listed = {p["id"] for p in out["programs"]}
    for prog_id, atts in sorted(by_prog.items()):
        if prog_id not in listed:
            for a in atts:
                out["warnings"].append(f"{a['target']}: {a['kind']} runs program id {prog_id}, which is not "
                                       f"pinned under {cfg.pin_root}; `nexusctl up` replaces it")
    out["warnings"] += state.data.get("warnings", [])
    return out
