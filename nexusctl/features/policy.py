"""DNS policy: the rule sets live in maps of the DNS objects (bpf/include/policy.h);
this feature sizes them and keeps them matching config + imports + runtime rules."""
from __future__ import annotations

import time

from nexusctl.engine.actions import Action, Ctx

OBJECTS: list = []                  # the policy code is part of nexus_dns_xdp / nexus_dns_tc


def map_sizes(cfg) -> dict[str, int]:
    n = cfg.policy.max_rules
    return {"nexus_pol_rules.inner": n, "nexus_pol_bloom.inner": n}


def _dns_loaded(cfg) -> bool:
    return any(i.xdp or i.tc_egress for i in cfg.interfaces)


class SyncPolicy(Action):
    """Make the kernel's rule set match the rule sources (a generation swap when they differ)."""
    kind = "policy"

    def __init__(self, cfg, config_only: bool = False):
        self.cfg = cfg
        self.config_only = config_only
        self.reason = ""
        self.result: dict | None = None

    def describe(self) -> str:
        what = "the config's rules" if self.config_only else "config, imported and runtime rules"
        return f"load {what} into the kernel (policy generation swap)"

    def _cheap_fingerprint(self) -> str:
        """What the sources are, without parsing big lists: files by size and mtime."""
        import hashlib
        import json
        from nexusctl.policy import store
        h = hashlib.sha256(b"config-only" if self.config_only else b"all")
        for bl in self.cfg.blocklists:
            try:
                st = bl.path.stat()
                h.update(f"{bl.path}:{st.st_size}:{st.st_mtime_ns}:{bl.format}:{bl.action}:{bl.to}:"
                         f"{bl.priority}".encode())
            except OSError:
                h.update(f"{bl.path}:missing".encode())
        h.update(json.dumps([r.model_dump(mode="json") for r in self.cfg.policies], sort_keys=True).encode())
        h.update(str(self.cfg.policy.bloom).encode())
        if not self.config_only:
            d = store.imports_dir(self.cfg.state_dir)
            for p in sorted(d.glob("*.json")) if d.is_dir() else []:
                h.update(p.read_bytes())
            rt = store.runtime_path(self.cfg.state_dir)
            if rt.exists():
                h.update(rt.read_bytes())
        return h.hexdigest()

    def satisfied(self, ctx: Ctx) -> bool:
        from nexusctl.policy.kernel import PolicyKernel
        rec = ctx.state.data.get("policy") or {}
        if rec.get("fingerprint") != self._cheap_fingerprint():
            self.reason = "the rule sources changed" if rec else "no rules loaded yet"
            return False
        try:
            with PolicyKernel(ctx.runner, self.cfg.pin_root, self.cfg.policy.max_rules) as pk:
                live = pk.live_counts()
        except Exception:  # noqa: BLE001 - maps missing: not satisfied
            self.reason = "the policy maps are new"
            return False
        if not live["loaded"] or live["generation"] != rec.get("generation") or live["rules"] != rec.get("rules"):
            self.reason = "the kernel's rule set differs from the one recorded"
            return False
        return True

    def diff(self, ctx: Ctx) -> dict:
        rec = ctx.state.data.get("policy") or {}
        return {"rules": [rec.get("rules"), "from sources"], "reason": [None, self.reason]}

    def apply(self, ctx: Ctx) -> None:
        from nexusctl.policy import store
        from nexusctl.policy.kernel import PolicyKernel
        fp = self._cheap_fingerprint()
        sources = store.all_sources(self.cfg, config_only=self.config_only)
        for s in sources:
            for p in s.problems[:20]:
                ctx.warn(p)
            if len(s.problems) > 20:
                ctx.warn(f"{s.name}: {len(s.problems) - 20} more lines skipped")
        with PolicyKernel(ctx.runner, self.cfg.pin_root, self.cfg.policy.max_rules, self.cfg.policy.bloom) as pk:
            res = pk.load(sources)
        self.result = res.to_json()
        ctx.state.data["policy"] = {"fingerprint": fp, "generation": res.generation, "rules": res.rules,
                                    "prefix_rules": res.prefix_rules, "loaded_at": int(time.time()),
                                    "sources": {s.name: s.count for s in sources}}
        ctx.state.save()


def extra_actions(cfg, state) -> list[Action]:
    if not _dns_loaded(cfg):
        return []
    return [SyncPolicy(cfg)]
