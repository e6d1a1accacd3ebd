"""Tracepoint, uprobe, perf_event and cgroup attachments as pinned BPF links.

A LinkSpec says which pinned program goes where; AttachLink creates the link
(nexusctl.tools.perf) and pins it as <pin_root>/links/<name>. Replacing a
link pins the new one over the old (attach new, then the old one goes).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nexusctl.engine import observe
from nexusctl.engine.actions import Action, Ctx
from nexusctl.engine.objects import pin_dirs
from nexusctl.errors import OperationFailed, Unsupported


@dataclass(frozen=True)
class LinkSpec:
    name: str                       # pin name under links/ (no dots: bpffs refuses them)
    prog: str                       # program pin name under progs/
    kind: str                       # tracepoint | uprobe | perf_event | cgroup | lsm
    target: str                     # what status shows
    tp: tuple[str, str] | None = None             # (category, name)
    uprobe: tuple[str, str, bool] | None = None   # (library path, symbol, retprobe)
    perf: tuple[int, int, int, int] | None = None  # (type, config, cpu, frequency Hz)
    cgroup: tuple[str, str] | None = None         # (cgroup v2 dir, connect4|connect6|sendmsg4|sendmsg6)


def _open_target(ctx: Ctx, spec: LinkSpec) -> tuple[int | None, int]:
    """(target fd, attach type) for the spec; None: no target (LSM links are global)."""
    from nexusctl.tools import perf
    try:
        if spec.kind == "tracepoint":
            perf.ensure_tracefs(ctx.runner)
            return perf.open_tracepoint(*spec.tp), perf.BPF_PERF_EVENT
        if spec.kind == "uprobe":
            path, symbol, ret = spec.uprobe
            return perf.open_uprobe(path, perf.elf_symbol_offset(path, symbol), ret), perf.BPF_PERF_EVENT
        if spec.kind == "perf_event":
            ptype, config, cpu, freq = spec.perf
            return perf.open_counter(ptype, config, cpu, freq=freq), perf.BPF_PERF_EVENT
        if spec.kind == "cgroup":
            path, how = spec.cgroup
            return os.open(path, os.O_RDONLY | os.O_DIRECTORY), perf.CGROUP_ATTACH_TYPES[how]
        if spec.kind == "lsm":
            return None, perf.BPF_LSM_MAC
    except perf.PerfError as e:
        raise Unsupported(f"cannot attach {spec.prog} to {spec.kind} {spec.target}: {e.strerror or e}",
                          "see `nexusctl doctor` for what this kernel offers") from None
    except FileNotFoundError as e:
        raise OperationFailed(f"cannot attach {spec.prog}: {e.filename} does not exist") from None
    raise OperationFailed(f"unknown link kind {spec.kind}")


class AttachLink(Action):
    kind = "attach-link"

    def __init__(self, spec: LinkSpec, pin_root: Path):
        self.spec = spec
        self.pin_root = pin_root
        self._created = False

    @property
    def prog_pin(self) -> Path:
        return pin_dirs(self.pin_root)["progs"] / self.spec.prog

    @property
    def link_pin(self) -> Path:
        return pin_dirs(self.pin_root)["links"] / self.spec.name

    def describe(self) -> str:
        return f"attach {self.spec.prog} to {self.spec.kind} {self.spec.target} (link pinned as links/{self.spec.name})"

    def satisfied(self, ctx: Ctx) -> bool:
        from nexusctl.tools import perf
        want = observe.pinned_prog(ctx.runner, self.prog_pin) if self.prog_pin.exists() else None
        if want is None or self.spec.prog in ctx.cache.get("pending_programs", ()):
            self.reason = "its program is (re)loaded first"
            return False
        if not self.link_pin.exists():
            self.reason = "not attached"
            return False
        if perf.link_prog_id(str(self.link_pin)) != want["id"]:
            self.reason = "the link runs another program than the pinned one"
            return False
        self.reason = ""
        if self.spec.name not in ctx.state.links:
            ctx.state.links[self.spec.name] = self._record(want["id"])
            ctx.state.save()
        return True

    def _record(self, prog_id: int) -> dict:
        return {"kind": self.spec.kind, "target": self.spec.target, "prog": self.spec.prog, "prog_id": prog_id,
                "pin": str(self.link_pin)}

    def diff(self, ctx: Ctx):
        from nexusctl.tools import perf
        cur = perf.link_prog_id(str(self.link_pin)) if self.link_pin.exists() else None
        return {"link": [f"program id {cur}" if cur else None, f"{self.spec.prog} → {self.spec.kind} {self.spec.target}"]}

    def apply(self, ctx: Ctx) -> None:
        from nexusctl.tools import perf
        if not self.prog_pin.exists():
            raise OperationFailed(f"{self.prog_pin} is not pinned", "run `nexusctl up`")
        existed = self.link_pin.exists()
        fd, attach_type = _open_target(ctx, self.spec)
        ctx.runner.kernel_action(f"BPF_LINK_CREATE {self.spec.prog} → {self.spec.kind} {self.spec.target}; "
                                 f"pin {self.link_pin}")
        try:
            perf.attach_pinned(str(self.prog_pin), 0 if fd is None else fd, attach_type, str(self.link_pin))
        except perf.PerfError as e:
            raise Unsupported(f"cannot attach {self.spec.prog} to {self.spec.kind} {self.spec.target}: "
                              f"{e.strerror or e}", "see `nexusctl doctor`") from None
        finally:
            if fd is not None:
                os.close(fd)
        self._created = not existed
        want = observe.pinned_prog(ctx.runner, self.prog_pin)
        ctx.state.links[self.spec.name] = self._record(want["id"] if want else None)
        ctx.state.save()

    def undo(self, ctx: Ctx) -> None:
        if self._created and self.link_pin.exists():
            self.link_pin.unlink()
            ctx.state.links.pop(self.spec.name, None)


class DetachLink(Action):
    kind = "detach-link"

    def __init__(self, name: str, pin_root: Path, target: str = ""):
        self.name = name
        self.pin_root = pin_root
        self.target = target

    @property
    def link_pin(self) -> Path:
        return pin_dirs(self.pin_root)["links"] / self.name

    def describe(self) -> str:
        return f"detach links/{self.name}" + (f" ({self.target})" if self.target else "")

    def satisfied(self, ctx: Ctx) -> bool:
        if not self.link_pin.exists():
            if self.name in ctx.state.links:
                ctx.state.links.pop(self.name, None)
                ctx.state.save()
            return True
        return False

    def apply(self, ctx: Ctx) -> None:
        ctx.runner.kernel_action(f"unpin {self.link_pin} (the link detaches)")
        self.link_pin.unlink()
        ctx.state.links.pop(self.name, None)
        ctx.state.save()
