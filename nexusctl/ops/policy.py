"""policy add / rm / list / import / sync."""
from __future__ import annotations

import time
from pathlib import Path

from nexusctl.config.model import PolicyRule
from nexusctl.errors import OperationFailed, UsageError
from nexusctl.features.policy import SyncPolicy, _dns_loaded
from nexusctl.policy import store
from nexusctl.policy.formats import FORMATS, guess_format, parse_file
from nexusctl.policy.rules import PREFIX, Attrs, PatternError, pattern_kind, rule_json


def _kernel(app):
    from nexusctl.policy.kernel import PolicyKernel
    cfg = app.config
    return PolicyKernel(app.runner, cfg.pin_root, cfg.policy.max_rules, cfg.policy.bloom)


def _kernel_up(app) -> bool:
    cfg = app.config
    return _dns_loaded(cfg) and (cfg.pin_root / "maps" / "nexus_pol_state").exists()


def _record(app, ctx_state) -> None:
    """After an in-place change: the kernel matches the sources again (no rebuild at the next up)."""
    with _kernel(app) as pk:
        live = pk.live_counts()
    rec = ctx_state.data.setdefault("policy", {})
    rec.update(fingerprint=SyncPolicy(app.config)._cheap_fingerprint(), generation=live["generation"],
               rules=live["rules"], prefix_rules=live["prefix_rules"])
    ctx_state.save()


def _prefixes(sources) -> dict:
    out = {}
    for s in sources:
        for g in s.groups:
            for p in g.patterns:
                kind, body = pattern_kind(p)
                if kind == PREFIX:
                    out[body] = (g.attrs, len(p))
    return out


def _validated(pattern, action, to, qtypes, priority) -> tuple[str, Attrs]:
    try:
        rule = PolicyRule(pattern=pattern, action=action, to=to, qtypes=qtypes or [], priority=priority)
        pattern_kind(rule.pattern)
        return rule.pattern, Attrs.make(rule.action, rule.priority, rule.to, rule.qtypes)
    except (ValueError, PatternError) as e:
        msg = str(e)
        if "validation error" in msg:
            msg = "; ".join(x.strip() for x in msg.splitlines()[1:] if x.strip() and not x.startswith("  For"))
        raise UsageError(f"bad rule: {msg}".replace("Value error, ", "")) from None


def add(app, pattern: str, action: str, to: str | None, qtypes: list[str], priority: int) -> dict:
    pattern, attrs = _validated(pattern, action, to, qtypes, priority)
    cfg = app.config
    out = {"changed": True, "rule": rule_json(pattern, attrs, "runtime"), "in_kernel": False}
    if app.dry_run:
        return {**out, "changed": False, "dry_run": True}
    with app.lock():
        rt = store.load_runtime(cfg.state_dir)
        if rt.get(pattern) == attrs:
            out["changed"] = False
        rt[pattern] = attrs
        store.save_runtime(cfg.state_dir, rt)
        if _kernel_up(app):
            state = app.state()
            with _kernel(app) as pk:
                pk.add(pattern, attrs, _prefixes(store.all_sources(cfg)))
            app.runner.kernel_action(f"policy: {pattern} → {action} in the live rule set")
            _record(app, state)
            out["in_kernel"] = True
    return out


def rm(app, pattern: str) -> dict:
    cfg = app.config
    try:
        pattern = PolicyRule(pattern=pattern, action="block").pattern
    except ValueError as e:
        raise UsageError(f"bad pattern: {e}") from None
    sources = store.all_sources(cfg)
    owners = [s.name for s in sources if any(pattern in g.patterns for g in s.groups)]
    if not owners:
        raise UsageError(f"no rule for {pattern}", "see `nexusctl policy list`")
    removable = [o for o in owners if o == "runtime" or o.startswith("import:")]
    if not removable:
        where = ", ".join(owners)
        raise UsageError(f"{pattern} comes from {where}",
                         "remove it from the config (policies:/blocklists:) and run `nexusctl policy sync`")
    if app.dry_run:
        return {"changed": False, "dry_run": True, "would_remove_from": removable}
    with app.lock():
        rt = store.load_runtime(cfg.state_dir)
        if pattern in rt:
            del rt[pattern]
            store.save_runtime(cfg.state_dir, rt)
        for s in store.load_imports(cfg.state_dir):
            if any(pattern in g.patterns for g in s.groups):
                for g in s.groups:
                    g.patterns = [p for p in g.patterns if p != pattern]
                name = s.name.split(":", 1)[1]
                store.save_import(cfg.state_dir, name, s.groups, {"edited": int(time.time())})
        left = store.effective_rules(store.all_sources(cfg)).get(pattern)
        in_kernel = False
        if _kernel_up(app):
            state = app.state()
            with _kernel(app) as pk:
                prefixes = _prefixes(store.all_sources(cfg))
                if left:
                    pk.add(pattern, left[0], prefixes)     # a lower source still has a rule for it
                else:
                    pk.remove(pattern, prefixes)
            _record(app, state)
            in_kernel = True
    out = {"changed": True, "removed": pattern, "from": removable, "in_kernel": in_kernel}
    if left:
        out["now"] = rule_json(pattern, left[0], left[1])
    return out


def list_rules(app, limit: int | None = None, source: str | None = None) -> dict:
    cfg = app.config
    eff = store.effective_rules(store.all_sources(cfg))
    rules = [rule_json(p, a, s) for p, (a, s) in eff.items() if source is None or s.startswith(source)]
    rules.sort(key=lambda r: (r["priority"], r["pattern"]))
    total = len(rules)
    if limit:
        rules = rules[:limit]
    out = {"rules": rules, "total": total}
    if _kernel_up(app):
        with _kernel(app) as pk:
            out["kernel"] = pk.live_counts()
    return out


def import_file(app, path: Path, fmt: str | None, action: str, to: str | None, priority: int,
                strict: bool, name: str | None) -> dict:
    cfg = app.config
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    fmt = fmt or guess_format(path)
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}", f"use one of: {', '.join(FORMATS)}")
    try:
        attrs = Attrs.make(action, priority, to)
    except (ValueError, PatternError) as e:
        raise UsageError(f"bad --action/--to: {e}") from None
    t0 = time.monotonic()
    parsed = parse_file(path, fmt, attrs, strict=strict)
    parse_s = time.monotonic() - t0
    name = store.import_name(Path(name) if name else path)
    out = {"changed": parsed.count > 0, "name": name, "format": fmt, "imported": parsed.count,
           "lines": parsed.lines, "skipped": len(parsed.problems), "problems": parsed.problems[:50],
           "parse_seconds": round(parse_s, 3)}
    if app.dry_run:
        return {**out, "changed": False, "dry_run": True}
    with app.lock():
        store.save_import(cfg.state_dir, name, parsed.groups,
                          {"file": str(path.resolve()), "format": fmt, "imported_at": int(time.time())})
        if _kernel_up(app):
            out["kernel"] = _sync(app, config_only=False)
    out["seconds"] = round(time.monotonic() - t0, 3)
    return out


def _sync(app, config_only: bool) -> dict:
    from nexusctl.engine.executor import execute
    ctx = app.ctx()
    action = SyncPolicy(app.config, config_only=config_only)
    execute([action], ctx, dry_run=app.dry_run)
    return action.result or {}


def sync(app) -> dict:
    """Make the kernel match the config's policies: and blocklists: alone."""
    cfg = app.config
    before = store.effective_rules(store.all_sources(cfg))
    after = store.effective_rules(store.all_sources(cfg, config_only=True))
    added = [p for p in after if p not in before]
    removed = [p for p in before if p not in after]
    changed = [p for p in after if p in before and after[p][0] != before[p][0]]
    out = {"changed": bool(added or removed or changed), "added": len(added), "removed": len(removed),
           "modified": len(changed), "examples": {"added": added[:10], "removed": removed[:10],
                                                  "modified": changed[:10]}}
    if app.dry_run:
        return {**out, "changed": False, "dry_run": True}
    with app.lock():
        rt, imp = store.forget_runtime_and_imports(cfg.state_dir)
        out["forgot"] = {"runtime_rules": rt, "imports": imp}
        if _kernel_up(app):
            out["kernel"] = _sync(app, config_only=True)
            state = app.state()
            # from now on the sources are the config alone (runtime and imports are gone)
            state.data.setdefault("policy", {})["fingerprint"] = SyncPolicy(cfg)._cheap_fingerprint()
            state.save()
        elif not _dns_loaded(cfg):
            raise OperationFailed("no interface in the config: the policy has nowhere to run",
                                  "add an interface and run `nexusctl up`")
    return out
