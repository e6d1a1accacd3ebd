"""build and verify."""
from __future__ import annotations

import os

from nexusctl.engine.build import object_path, plan_build, sources
from nexusctl.engine.executor import PlanResult, execute
from nexusctl.engine.objects import map_sizes
from nexusctl.errors import OperationFailed
from nexusctl.ops.progress import plan_progress
from nexusctl.paths import bpf_src_dir


def build(app, only: list[str] | None = None, vmlinux_only: bool = False) -> PlanResult:
    cfg = app.config
    actions = plan_build(bpf_src_dir(), cfg.build_dir, only)
    if vmlinux_only:
        actions = actions[:1]
    ctx = app.ctx()
    with plan_progress(app, len(actions), "build") as on_step:
        return execute(actions, ctx, dry_run=app.dry_run, rollback=False, on_step=on_step)


def verify(app, only: list[str] | None = None) -> dict:
    """Load every object into the kernel (no pins, no attach) and report verifier figures."""
    res = build(app, only)
    if app.dry_run:
        return {"changed": False, "dry_run": True, "objects": [], "build": res.to_json()}
    L = app.runner.libbpf
    sizes = map_sizes(app.config)
    results, failed = [], []
    for src in sources(bpf_src_dir()):
        if only and src.stem not in only:
            continue
        path = object_path(app.config.build_dir, src.stem)
        skip = _unsupported(app, src.stem)
        if skip:
            results.append({"object": src.stem, "program": None, "ok": True, "skipped": skip, "type": None,
                            "verified_insns": None, "xlated_insns": None, "jited_bytes": None})
            continue
        app.runner.kernel_action(f"libbpf: load {path} (verify only; nothing pinned or attached)")
        try:
            with L.BpfObject(str(path)) as obj:
                for name, m in obj.user_maps():
                    if name in sizes:
                        obj.set_map_max_entries(m, sizes[name])
                obj.load()
                for p in obj.loaded_programs():
                    info = L.prog_info(p.fd)
                    results.append({"object": src.stem, "program": p.name, "section": p.section,
                                    "type": info["type"], "verified_insns": info["verified_insns"],
                                    "xlated_insns": info["xlated_len"] // 8, "jited_bytes": info["jited_len"],
                                    "ok": True})
        except L.LibbpfError as e:
            tail = "\n".join((e.log or "").strip().splitlines()[-25:])
            results.append({"object": src.stem, "program": None, "ok": False,
                            "error": os.strerror(e.errno) if e.errno else str(e), "log_tail": tail})
            failed.append(src.stem)
    out = {"changed": res.changed, "objects": results, "failed": failed}
    if failed:
        raise VerifyFailed(out)
    return out


def _unsupported(app, name: str) -> str | None:
    """A feature may say its object needs what this kernel lacks (e.g. BPF LSM): skipped, not failed."""
    from nexusctl.features import FEATURES
    for f in FEATURES:
        why = getattr(f, "unsupported_object", lambda *_: None)(app, name)
        if why:
            return why
    return None


class VerifyFailed(OperationFailed):
    def __init__(self, out: dict):
        names = ", ".join(out["failed"])
        tails = "\n\n".join(f"{r['object']}:\n{r.get('log_tail', '')}" for r in out["objects"] if not r["ok"])
        super().__init__(f"the kernel refused {names}", "run with -v to see the verifier log tail",
                         details=tails)
        self.out = out
