"""Actions that change the kernel: mounts, pins, loads, config map, XDP and TC
attachments, and their reverses for `down`."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from nexusctl.config.model import Interface
from nexusctl.engine import observe
from nexusctl.engine.actions import Action, Ctx
from nexusctl.engine.build import file_sha256
from nexusctl.engine.objects import pin_dirs
from nexusctl.features.base import ObjectSpec
from nexusctl.errors import OperationFailed, Unsupported
from nexusctl.tools.runner import reraise_libbpf

STAGING_PREFIX = "staging_"   # a pin being swapped in; never listed
TC_PREF = 21357          # our fixed tc filter priority: `tc filter replace` then replaces, never stacks
TC_HANDLE = "0x1"
DEFAULT_BPFFS = Path("/sys/fs/bpf")


def iface_key(ifname: str, netns: str | None) -> str:
    return f"{netns}/{ifname}" if netns else ifname


# ---------------------------------------------------------------- filesystem

class EnsureBpffs(Action):
    kind = "mount"

    def __init__(self, pin_root: Path):
        self.pin_root = pin_root
        self.mountpoint = DEFAULT_BPFFS if str(pin_root).startswith(str(DEFAULT_BPFFS) + "/") else pin_root

    def describe(self) -> str:
        return f"mount -t bpf bpf {self.mountpoint}"

    def satisfied(self, ctx: Ctx) -> bool:
        return observe.on_bpffs(self.pin_root)

    def apply(self, ctx: Ctx) -> None:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        res = ctx.runner.run(["mount", "-t", "bpf", "bpf", str(self.mountpoint)], check=False)
        if res.rc != 0 or not observe.on_bpffs(self.pin_root):
            raise Unsupported(f"cannot mount the BPF filesystem at {self.mountpoint}: "
                              f"{(res.stderr or 'not a bpffs after mount').strip()}",
                              "run as root on a kernel with CONFIG_BPF_SYSCALL, or set pin_root under a bpffs mount")


class EnsureDir(Action):
    kind = "mkdir"

    def __init__(self, path: Path, mode: int = 0o700):
        self.path = path
        self.mode = mode
        self._created: list[Path] = []

    def describe(self) -> str:
        return f"mkdir -m {self.mode:o} {self.path}"

    def satisfied(self, ctx: Ctx) -> bool:
        return self.path.is_dir()

    def apply(self, ctx: Ctx) -> None:
        missing = []
        p = self.path
        while not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            d.mkdir(mode=self.mode)
            os.chmod(d, self.mode)
            self._created.append(d)
        ctx.runner.kernel_action(self.describe())

    def undo(self, ctx: Ctx) -> None:
        for d in reversed(self._created):
            try:
                d.rmdir()
            except OSError:
                pass


# ---------------------------------------------------------------- objects

def is_private_map(name: str) -> bool:
    """Maps named *_scratch are one object's working memory (per-CPU buffers)."""
    return name.endswith("_scratch")


def _map_compatible(pinned: dict, want: dict) -> bool:
    """Would libbpf reuse the pinned map for this definition?"""
    return all(pinned.get(k) == want.get(k) for k in ("type_id", "key_size", "value_size", "max_entries",
                                                       "flags"))


class LoadObject(Action):
    """Load an object, reusing maps already pinned under maps/ (so XDP and TC share
    them and reloads keep their contents), and pin its programs under progs/.
    A program pin is replaced atomically (pin beside, then rename over)."""
    kind = "load"

    def __init__(self, spec: ObjectSpec, obj_path: Path, pin_root: Path, map_sizes: dict[str, int]):
        self.spec = spec
        self.obj_path = obj_path
        self.pin_root = pin_root
        self.map_sizes = map_sizes
        self._new_pins: list[Path] = []

    @property
    def dirs(self):
        return pin_dirs(self.pin_root)

    def prog_pin(self, prog: str) -> Path:
        return self.dirs["progs"] / prog

    def describe(self) -> str:
        return (f"load {self.obj_path.name}: pin {', '.join(self.spec.programs)} in {self.dirs['progs']}, "
                f"maps in {self.dirs['maps']}")

    def satisfied(self, ctx: Ctx) -> bool:
        st = ctx.state.objects.get(self.spec.name)
        if not st or not self.obj_path.exists():
            return False
        if st.get("sha256") != file_sha256(self.obj_path) or st.get("map_sizes", {}) != self.map_sizes:
            return False
        L = ctx.runner.libbpf
        for prog in self.spec.programs:
            pin = self.prog_pin(prog)
            if not pin.exists():
                return False
            fd = L.obj_get(str(pin))
            try:
                if L.prog_info(fd)["id"] != st["programs"].get(prog, {}).get("id"):
                    return False
                # every map the program uses must still be the pinned one
                for name, mid in st.get("maps", {}).items():
                    mpin = self.dirs["maps"] / name
                    info = observe.pinned_map(ctx.runner, mpin)
                    if info is None or info["id"] != mid:
                        return False
            finally:
                os.close(fd)
        return True

    def apply(self, ctx: Ctx) -> None:
        if not self.obj_path.exists():
            raise OperationFailed(f"{self.obj_path} does not exist", "run `nexusctl build` first")
        L = ctx.runner.libbpf
        ctx.runner.kernel_action(f"libbpf: open {self.obj_path}, reuse/pin maps in {self.dirs['maps']}, load")
        for d in self.dirs.values():
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        maps_used: dict[str, int] = {}
        try:
            with L.BpfObject(str(self.obj_path)) as obj:
                for name, m in obj.user_maps():
                    pin = self.dirs["maps"] / name
                    if name in self.map_sizes:
                        obj.set_map_max_entries(m, self.map_sizes[name])
                    if is_private_map(name):
                        continue              # per-object working memory: not shared, not pinned
                    if pin.exists():
                        pinned = observe.pinned_map(ctx.runner, pin)
                        if pinned and not _map_compatible(pinned, obj.map_def(m)):
                            self._replace_map(ctx, name, pin, pinned)
                    else:
                        self._new_pins.append(pin)
                    obj.set_map_pin_path(m, str(pin))
                obj.load()
                progs = {}
                for prog in obj.loaded_programs():
                    if prog.name not in self.spec.programs:
                        continue
                    final = self.prog_pin(prog.name)
                    tmp = final.with_name(f"{STAGING_PREFIX}{prog.name}")   # bpffs refuses dots in names
                    if tmp.exists():
                        tmp.unlink()
                    obj.pin_program(prog.name, str(tmp))
                    existed = final.exists()
                    os.replace(tmp, final)
                    if not existed:
                        self._new_pins.append(final)
                    info = L.prog_info(prog.fd)
                    progs[prog.name] = {"id": info["id"], "tag": info["tag"], "type": info["type"],
                                        "verified_insns": info["verified_insns"]}
                for name, _ in obj.user_maps():
                    if is_private_map(name):
                        continue
                    info = observe.pinned_map(ctx.runner, self.dirs["maps"] / name)
                    if info:
                        maps_used[name] = info["id"]
        except OSError as e:
            if isinstance(e, L.LibbpfError):
                raise reraise_libbpf(e, f"loading {self.obj_path.name}") from None
            raise
        ctx.state.objects[self.spec.name] = {
            "sha256": file_sha256(self.obj_path), "path": str(self.obj_path), "programs": progs,
            "maps": maps_used, "map_sizes": dict(self.map_sizes), "loaded_at": int(time.time()),
        }
        ctx.state.save()

    def _replace_map(self, ctx: Ctx, name: str, pin: Path, pinned: dict) -> None:
        ctx.warn(f"map {name} changed layout (pinned: {pinned['type']}, key {pinned['key_size']} B, "
                 f"value {pinned['value_size']} B, {pinned['max_entries']} entries); "
                 f"it was recreated and its contents reset")
        pin.unlink()
        self._new_pins.append(pin)

    def undo(self, ctx: Ctx) -> None:
        for p in reversed(self._new_pins):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        ctx.state.objects.pop(self.spec.name, None)


class WriteConfigMap(Action):
    """Write struct nexus_config into the pinned config map (packed from the object's BTF)."""
    kind = "config-map"

    def __init__(self, pin_root: Path, obj_path: Path, values: dict, map_name: str = "nexus_config",
                 struct_name: str = "nexus_config", key: int = 0):
        self.pin = pin_dirs(pin_root)["maps"] / map_name
        self.obj_path = obj_path
        self.values = values
        self.struct_name = struct_name
        self.key = key.to_bytes(4, "little")
        self._old: bytes | None = None

    def describe(self) -> str:
        def short(v):
            if isinstance(v, (bytes, bytearray)):
                return f"<{len(v)} bytes>"
            return v
        shown = ", ".join(f"{k}={short(v)}" for k, v in self.values.items())
        return f"write {self.pin.name}: {shown}"

    def _packed(self) -> bytes:
        from nexusctl.tools.btf import Btf
        return Btf.from_elf(self.obj_path).struct(self.struct_name).pack(self.values)

    def satisfied(self, ctx: Ctx) -> bool:
        if not self.pin.exists() or not self.obj_path.exists():
            return False
        with ctx.runner.libbpf.MapHandle.pinned(str(self.pin)) as m:
            cur = m.lookup(self.key)
        return cur == self._packed()

    def apply(self, ctx: Ctx) -> None:
        ctx.runner.kernel_action(f"bpf_map_update_elem {self.pin} ({self.describe()})")
        with ctx.runner.libbpf.MapHandle.pinned(str(self.pin)) as m:
            self._old = m.lookup(self.key)
            m.update(self.key, self._packed())

    def undo(self, ctx: Ctx) -> None:
        if self._old is not None and self.pin.exists():
            with ctx.runner.libbpf.MapHandle.pinned(str(self.pin)) as m:
                m.update(self.key, self._old)


# ---------------------------------------------------------------- XDP

class AttachXdp(Action):
    kind = "attach-xdp"

    def __init__(self, ifname: str, netns: str | None, prog_pin: Path, mode: str, role: str = "dns"):
        self.ifname = ifname
        self.netns = netns
        self.prog_pin = prog_pin
        self.mode = mode                # native | generic | auto
        self.role = role                # dns | veth-peer
        self._attached = False

    @property
    def key(self) -> str:
        return f"xdp:{iface_key(self.ifname, self.netns)}"

    def describe(self) -> str:
        flag = {"native": "xdpdrv", "generic": "xdpgeneric", "auto": "xdpdrv (generic if refused)"}[self.mode]
        where = f" (netns {self.netns})" if self.netns else ""
        return f"bpftool net attach {flag} pinned {self.prog_pin} dev {self.ifname}{where}"

    def _live(self, ctx: Ctx) -> dict:
        st = observe.xdp_state(ctx.runner, self.ifname, self.netns)
        if st is None:
            raise OperationFailed(f"interface {iface_key(self.ifname, self.netns)} does not exist",
                                  "fix `interfaces:` in the config or create the interface")
        return st

    def satisfied(self, ctx: Ctx) -> bool:
        want = observe.pinned_prog(ctx.runner, self.prog_pin) if self.prog_pin.exists() else None
        if want is None:
            return False
        live = self._live(ctx)
        if live.get("prog_id") != want["id"]:
            return False
        if self.mode != "auto" and live.get("mode") != self.mode:
            return False
        rec = ctx.state.attachments.get(self.key)
        if not rec or rec.get("prog_id") != want["id"]:
            # attached but not recorded (state lost): record it, no kernel change needed
            ctx.state.attachments[self.key] = self._record(want["id"], live.get("mode"),
                                                           (rec or {}).get("reason", ""))
            ctx.state.save()
        return True

    def _record(self, prog_id: int, mode: str, reason: str) -> dict:
        return {"kind": "xdp", "ifname": self.ifname, "netns": self.netns, "pin": str(self.prog_pin),
                "prog_id": prog_id, "mode": mode, "requested_mode": self.mode, "reason": reason,
                "role": self.role}

    def _attach(self, ctx: Ctx, flag: str):
        return ctx.runner.run(["bpftool", "net", "attach", flag, "pinned", str(self.prog_pin),
                               "dev", self.ifname, "overwrite"], netns=self.netns, check=False)

    def apply(self, ctx: Ctx) -> None:
        live = self._live(ctx)
        want = observe.pinned_prog(ctx.runner, self.prog_pin)
        if want is None:
            raise OperationFailed(f"{self.prog_pin} is not pinned", "run `nexusctl up` (it loads before attaching)")
        if live.get("prog_id") and not (live.get("prog_name") or "").startswith(observe.NEXUS_PROG_PREFIX):
            raise OperationFailed(
                f"{iface_key(self.ifname, self.netns)} already runs XDP program {live.get('prog_name')} "
                f"(id {live.get('prog_id')}) that nexus did not attach",
                "detach it (`ip link set dev IFACE xdp off`) or remove this interface from the config")
        reason = ""
        order = {"native": ["xdpdrv"], "generic": ["xdpgeneric"], "auto": ["xdpdrv", "xdpgeneric"]}[self.mode]
        # A program in the other mode blocks the attach ("can't be active at the same time").
        if live.get("prog_id") and live.get("mode") in ("native", "generic"):
            current_flag = "xdpdrv" if live["mode"] == "native" else "xdpgeneric"
            if current_flag != order[0]:
                ctx.runner.run(["bpftool", "net", "detach", current_flag, "dev", self.ifname], netns=self.netns)
        last = None
        for flag in order:
            res = self._attach(ctx, flag)
            if res.rc == 0:
                break
            last = (res.stderr or res.stdout).strip().splitlines()
            if flag == "xdpdrv" and self.mode == "auto":
                reason = f"native XDP refused ({last[-1] if last else 'error'}); using generic"
                ctx.warn(f"{iface_key(self.ifname, self.netns)}: {reason}")
        else:
            msg = last[-1] if last else "unknown error"
            raise OperationFailed(f"attaching XDP to {iface_key(self.ifname, self.netns)} failed: {msg}",
                                  "try xdp_mode: generic, or check `nexusctl doctor`",
                                  details="\n".join(last or []))
        self._attached = True
        live = self._live(ctx)
        ctx.state.attachments[self.key] = self._record(want["id"], live.get("mode"), reason)
        ctx.state.save()

    def undo(self, ctx: Ctx) -> None:
        if self._attached:
            DetachXdp(self.ifname, self.netns).apply(ctx)


class DetachXdp(Action):
    kind = "detach-xdp"

    def __init__(self, ifname: str, netns: str | None):
        self.ifname = ifname
        self.netns = netns

    @property
    def key(self) -> str:
        return f"xdp:{iface_key(self.ifname, self.netns)}"

    def describe(self) -> str:
        where = f" (netns {self.netns})" if self.netns else ""
        return f"bpftool net detach xdp dev {self.ifname}{where}"

    def satisfied(self, ctx: Ctx) -> bool:
        live = observe.xdp_state(ctx.runner, self.ifname, self.netns)
        ours = bool(live and live.get("prog_id") and
                    (live.get("prog_name") or "").startswith(observe.NEXUS_PROG_PREFIX))
        if not ours and self.key in ctx.state.attachments:
            ctx.state.attachments.pop(self.key, None)
            ctx.state.save()
        return not ours

    def apply(self, ctx: Ctx) -> None:
        live = observe.xdp_state(ctx.runner, self.ifname, self.netns) or {}
        flag = "xdpgeneric" if live.get("mode") == "generic" else "xdpdrv"
        ctx.runner.run(["bpftool", "net", "detach", flag, "dev", self.ifname], netns=self.netns)
        ctx.state.attachments.pop(self.key, None)
        ctx.state.save()


# ---------------------------------------------------------------- TC

class EnsureClsact(Action):
    kind = "clsact"

    def __init__(self, ifname: str, netns: str | None):
        self.ifname = ifname
        self.netns = netns
        self._created = False

    @property
    def key(self) -> str:
        return f"clsact:{iface_key(self.ifname, self.netns)}"

    def describe(self) -> str:
        where = f" (netns {self.netns})" if self.netns else ""
        return f"tc qdisc add dev {self.ifname} clsact{where}"

    def satisfied(self, ctx: Ctx) -> bool:
        if not observe.link_exists(ctx.runner, self.ifname, self.netns):
            raise OperationFailed(f"interface {iface_key(self.ifname, self.netns)} does not exist",
                                  "fix `interfaces:` in the config or create the interface")
        return observe.has_clsact(ctx.runner, self.ifname, self.netns)

    def apply(self, ctx: Ctx) -> None:
        ctx.runner.run(["tc", "qdisc", "add", "dev", self.ifname, "clsact"], netns=self.netns)
        self._created = True
        ctx.state.attachments[self.key] = {"kind": "clsact", "ifname": self.ifname, "netns": self.netns,
                                           "created": True}
        ctx.state.save()

    def undo(self, ctx: Ctx) -> None:
        if self._created:
            ctx.runner.run(["tc", "qdisc", "del", "dev", self.ifname, "clsact"], netns=self.netns, check=False)
            ctx.state.attachments.pop(self.key, None)


class AttachTc(Action):
    kind = "attach-tc"

    def __init__(self, ifname: str, netns: str | None, prog_pin: Path, direction: str = "egress"):
        self.ifname = ifname
        self.netns = netns
        self.prog_pin = prog_pin
        self.direction = direction
        self._attached = False

    @property
    def key(self) -> str:
        return f"tc-{self.direction}:{iface_key(self.ifname, self.netns)}"

    def argv(self) -> list[str]:
        return ["tc", "filter", "replace", "dev", self.ifname, self.direction, "protocol", "all",
                "pref", str(TC_PREF), "handle", TC_HANDLE, "bpf", "direct-action",
                "object-pinned", str(self.prog_pin)]

    def describe(self) -> str:
        where = f" (netns {self.netns})" if self.netns else ""
        return " ".join(self.argv()) + where

    def _ours(self, ctx: Ctx) -> dict | None:
        for f in observe.tc_filters(ctx.runner, self.ifname, self.netns, self.direction):
            if f["pref"] == TC_PREF:
                return f
        return None

    def satisfied(self, ctx: Ctx) -> bool:
        want = observe.pinned_prog(ctx.runner, self.prog_pin) if self.prog_pin.exists() else None
        if want is None or not observe.link_exists(ctx.runner, self.ifname, self.netns):
            return False
        cur = self._ours(ctx)
        if not cur or cur["prog_id"] != want["id"]:
            return False
        if self.key not in ctx.state.attachments:
            ctx.state.attachments[self.key] = self._record(want["id"])
            ctx.state.save()
        return True

    def _record(self, prog_id: int) -> dict:
        return {"kind": f"tc-{self.direction}", "ifname": self.ifname, "netns": self.netns,
                "pin": str(self.prog_pin), "prog_id": prog_id, "pref": TC_PREF, "handle": TC_HANDLE}

    def apply(self, ctx: Ctx) -> None:
        cur = self._ours(ctx)
        if cur and not (cur["prog_name"] or "").startswith(observe.NEXUS_PROG_PREFIX):
            raise OperationFailed(f"tc {self.direction} filter pref {TC_PREF} on {self.ifname} belongs to "
                                  f"{cur['prog_name']}, not nexus", "remove that filter first")
        ctx.runner.run(self.argv(), netns=self.netns)
        self._attached = True
        want = observe.pinned_prog(ctx.runner, self.prog_pin)
        ctx.state.attachments[self.key] = self._record(want["id"] if want else None)
        ctx.state.save()

    def undo(self, ctx: Ctx) -> None:
        if self._attached:
            DetachTc(self.ifname, self.netns, self.direction).apply(ctx)


class DetachTc(Action):
    kind = "detach-tc"

    def __init__(self, ifname: str, netns: str | None, direction: str = "egress"):
        self.ifname = ifname
        self.netns = netns
        self.direction = direction

    @property
    def key(self) -> str:
        return f"tc-{self.direction}:{iface_key(self.ifname, self.netns)}"

    def describe(self) -> str:
        where = f" (netns {self.netns})" if self.netns else ""
        return f"tc filter del dev {self.ifname} {self.direction} pref {TC_PREF} handle {TC_HANDLE} bpf{where}"

    def satisfied(self, ctx: Ctx) -> bool:
        if not observe.link_exists(ctx.runner, self.ifname, self.netns):
            ctx.state.attachments.pop(self.key, None)
            return True
        ours = any(f["pref"] == TC_PREF and (f["prog_name"] or "").startswith(observe.NEXUS_PROG_PREFIX)
                   for f in observe.tc_filters(ctx.runner, self.ifname, self.netns, self.direction))
        if not ours:
            ctx.state.attachments.pop(self.key, None)
        return not ours

    def apply(self, ctx: Ctx) -> None:
        ctx.runner.run(["tc", "filter", "del", "dev", self.ifname, self.direction, "pref", str(TC_PREF),
                        "handle", TC_HANDLE, "bpf"], netns=self.netns)
        ctx.state.attachments.pop(self.key, None)
        ctx.state.save()


class RemoveClsact(Action):
    """Remove the clsact qdisc nexus created, if no filters of others remain on it."""
    kind = "clsact-del"

    def __init__(self, ifname: str, netns: str | None):
        self.ifname = ifname
        self.netns = netns

    @property
    def key(self) -> str:
        return f"clsact:{iface_key(self.ifname, self.netns)}"

    def describe(self) -> str:
        where = f" (netns {self.netns})" if self.netns else ""
        return f"tc qdisc del dev {self.ifname} clsact{where}"

    def satisfied(self, ctx: Ctx) -> bool:
        if not observe.link_exists(ctx.runner, self.ifname, self.netns) or \
                not observe.has_clsact(ctx.runner, self.ifname, self.netns):
            ctx.state.attachments.pop(self.key, None)
            return True
        others = [f for d in ("egress", "ingress")
                  for f in observe.tc_filters(ctx.runner, self.ifname, self.netns, d)
                  if not (f["pref"] == TC_PREF and (f["prog_name"] or "").startswith(observe.NEXUS_PROG_PREFIX))]
        if others:
            ctx.warn(f"kept clsact on {iface_key(self.ifname, self.netns)}: other filters use it")
            ctx.state.attachments.pop(self.key, None)
            return True
        return False

    def apply(self, ctx: Ctx) -> None:
        ctx.runner.run(["tc", "qdisc", "del", "dev", self.ifname, "clsact"], netns=self.netns)
        ctx.state.attachments.pop(self.key, None)
        ctx.state.save()


# ---------------------------------------------------------------- pins

class RemovePins(Action):
    """Remove everything under pin_root (our owned layout) and pin_root itself."""
    kind = "unpin"

    def __init__(self, pin_root: Path):
        self.pin_root = pin_root

    def describe(self) -> str:
        return f"rm -r {self.pin_root} (progs/, maps/, links/)"

    def satisfied(self, ctx: Ctx) -> bool:
        return not self.pin_root.exists()

    def apply(self, ctx: Ctx) -> None:
        ctx.runner.kernel_action(self.describe())
        shutil.rmtree(self.pin_root)
        ctx.state.objects.clear()
        ctx.state.links.clear()
        ctx.state.save()


class RemoveState(Action):
    kind = "state"
    bookkeeping = True

    def describe(self) -> str:
        return "forget state (state.json)"

    def satisfied(self, ctx: Ctx) -> bool:
        return not ctx.state.exists

    def apply(self, ctx: Ctx) -> None:
        ctx.state.remove()


class UnpinObject(Action):
    """Unpin the programs of an object the config no longer needs (maps stay with the rest)."""
    kind = "unpin-object"

    def __init__(self, name: str, programs: tuple[str, ...], pin_root: Path):
        self.name = name
        self.programs = programs
        self.pin_root = pin_root

    def describe(self) -> str:
        return f"unpin {', '.join(self.programs)} ({self.name} no longer configured)"

    def satisfied(self, ctx: Ctx) -> bool:
        return self.name not in ctx.state.objects and not any(
            (pin_dirs(self.pin_root)["progs"] / p).exists() for p in self.programs)

    def apply(self, ctx: Ctx) -> None:
        for p in self.programs:
            pin = pin_dirs(self.pin_root)["progs"] / p
            if pin.exists():
                pin.unlink()
        ctx.state.objects.pop(self.name, None)
        ctx.state.save()
