"""Actions that change the kernel: mounts, pins, loads, config map, XDP and TC
attachments, and their reverses for `down`."""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from nexusctl.engine import maplayout, observe
from nexusctl.engine.actions import Action, Ctx
from nexusctl.engine.build import file_sha256
from nexusctl.engine.objects import pin_dirs
from nexusctl.features.base import ObjectSpec
from nexusctl.errors import OperationFailed, Unsupported
from nexusctl.tools.runner import reraise_libbpf

from nexusctl.engine.observe import STAGING_PREFIX  # noqa: E402,F401 (re-exported)
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


# ---------------------------------------------------------------- maps

@dataclass
class MapChange:
    name: str
    want: maplayout.MapDecl
    pinned: maplayout.Pinned
    why: list[str]
    migrate: bool
    no_migrate_reason: str = ""

    @property
    def how(self) -> str:
        return "migrate its entries into a new map" if self.migrate else \
            f"recreate it empty ({self.no_migrate_reason})"


class PrepareMaps(Action):
    """Keep every pinned map whose layout the objects still declare; replace the
    others before any program loads: a new map is created from the object (so it
    carries the new BTF), the old entries are migrated into it, and it is pinned
    over the old one in one rename. Every object that uses such a map then
    reloads (LoadObject sees its programs still hold the old map), so no object
    is left on the old copy."""
    kind = "maps"

    def __init__(self, objects: list[tuple[ObjectSpec, Path]], pin_root: Path, map_sizes: dict[str, int]):
        self.objects = objects
        self.pin_root = pin_root
        self.map_sizes = map_sizes
        self.changes: list[MapChange] | None = None
        self._replaced: list[tuple[str, int]] = []      # (map name, fd of the old map)

    @property
    def maps_dir(self) -> Path:
        return pin_dirs(self.pin_root)["maps"]

    def describe(self) -> str:
        if self.changes:
            return "maps: " + "; ".join(f"{c.name} changed layout ({', '.join(c.why)}): {c.how}"
                                        for c in self.changes)
        return f"check pinned maps in {self.maps_dir} against the objects' layouts (reuse when unchanged)"

    def wanted(self, ctx: Ctx) -> dict[str, maplayout.MapDecl]:
        """Each map's declaration; objects that share a map must declare it alike."""
        out: dict[str, maplayout.MapDecl] = {}
        stale = ctx.cache.get("stale_objects", set())
        for spec, path in self.objects:
            if not path.exists() or spec.name in stale:
                continue
            for d in maplayout.declared_maps(path, self.map_sizes):
                first = out.get(d.name)
                if first is None:
                    out[d.name] = d
                elif not first.same_layout(d):
                    diff = maplayout.compare(maplayout.Pinned(
                        {"type_id": first.type_id, "type": first.type, **first.definition()},
                        first.key_sig, first.value_sig, first.enum_sig, None), d)
                    raise OperationFailed(
                        f"{Path(first.source).name} and {path.name} declare map {d.name} differently "
                        f"({', '.join(diff) or 'layout'})",
                        "rebuild both objects from the same headers (`nexusctl build`)")
        return out

    def _plan(self, ctx: Ctx) -> list[MapChange]:
        changes = []
        for name, want in self.wanted(ctx).items():
            info = observe.pinned_map(ctx.runner, self.maps_dir / name)
            if info is None:
                continue                        # the first load creates it
            pinned = maplayout.pinned_layout(info, name)
            why = maplayout.compare(pinned, want)
            if why:
                ok, no = maplayout.migratable(pinned, want)
                changes.append(MapChange(name, want, pinned, why, ok, no))
        return changes

    def satisfied(self, ctx: Ctx) -> bool:
        if not self.maps_dir.exists():
            return True
        self.changes = self._plan(ctx)
        self.reason = "; ".join(f"{c.name}: {', '.join(c.why)}" for c in self.changes)
        return not self.changes

    def diff(self, ctx: Ctx):
        return {c.name: {"change": c.why, "then": "migrate" if c.migrate else "recreate"} for c in self.changes or []}

    def apply(self, ctx: Ctx) -> None:
        if self.changes is None:
            self.changes = self._plan(ctx)
        for ch in self.changes:
            self._replace(ctx, ch)

    def _replace(self, ctx: Ctx, ch: MapChange) -> None:
        L = ctx.runner.libbpf
        pin = self.maps_dir / ch.name
        staging = self.maps_dir / f"{STAGING_PREFIX}{ch.name}"
        ctx.runner.kernel_action(f"create map {ch.name} from {Path(ch.want.source).name} at {staging}; "
                                 f"{'migrate entries; ' if ch.migrate else ''}rename over {pin}")
        if staging.exists():
            staging.unlink()                    # left by an interrupted run
        old_fd = L.obj_get(str(pin))
        try:
            with L.BpfObject(ch.want.source) as obj:
                # Create this one map only: no program loads, no other map is created.
                for _, p in obj.programs():
                    obj.set_autoload(p, False)
                for name, m in obj.maps():
                    if name == ch.name:
                        if name in self.map_sizes:
                            obj.set_map_max_entries(m, self.map_sizes[name])
                        if f"{name}.inner" in self.map_sizes:
                            obj.set_inner_max_entries(m, self.map_sizes[f"{name}.inner"])
                        obj.set_map_pin_path(m, str(staging))
                    else:
                        obj.set_autocreate(m, False)
                obj.load()
            new_fd = L.obj_get(str(staging))
        except OSError as e:
            os.close(old_fd)
            if isinstance(e, L.LibbpfError):
                raise reraise_libbpf(e, f"creating the new map {ch.name}") from None
            raise
        try:
            if ch.migrate:
                m = maplayout.migrate(L, old_fd, new_fd, ch.pinned, ch.want)
                msg = (f"map {ch.name} changed layout ({', '.join(ch.why)}): migrated {m.copied} "
                       f"entr{'y' if m.copied == 1 else 'ies'} into a new map")
                if m.dropped:
                    msg += f"; {m.dropped} could not be carried over ({', '.join(m.reasons)})"
                msg += "; updates made by the old programs until they are swapped out are not carried over"
            else:
                msg = (f"map {ch.name} changed layout ({', '.join(ch.why)}): recreated empty "
                       f"({ch.no_migrate_reason})")
        except BaseException:
            os.close(old_fd)                    # the old map stays pinned where it was
            staging.unlink(missing_ok=True)
            raise
        finally:
            os.close(new_fd)
        os.replace(staging, pin)
        self._replaced.append((ch.name, old_fd))
        ctx.cache.setdefault("replaced_maps", set()).add(ch.name)
        ctx.warn(msg)

    def undo(self, ctx: Ctx) -> None:
        L = ctx.runner.libbpf
        keep = ctx.cache.get("programs_loaded")
        for name, fd in reversed(self._replaced):
            if keep:
                ctx.warn(f"kept the new map {name}: programs loaded in this run already use it")
            else:
                staging = self.maps_dir / f"{STAGING_PREFIX}{name}"
                L.obj_pin(fd, str(staging))
                os.replace(staging, self.maps_dir / name)
            os.close(fd)
        self._replaced.clear()


# ---------------------------------------------------------------- objects

def is_private_map(name: str) -> bool:
    """Maps named *_scratch are one object's working memory (per-CPU buffers)."""
    return name.endswith("_scratch")


class LoadObject(Action):
    """Load an object, reusing maps already pinned under maps/ (so XDP and TC share
    them and reloads keep their contents), and pin its programs under progs/.
    A program pin is replaced atomically (pin beside, then rename over): the old
    program keeps running where it is attached until the attach step swaps it.

    Satisfied only when the live pins are what the state recorded for this very
    object file (sha256), with the same program ids and tags, and its programs use
    the maps pinned now (not an old copy a PrepareMaps replaced)."""
    kind = "load"

    def __init__(self, spec: ObjectSpec, obj_path: Path, pin_root: Path, map_sizes: dict[str, int],
                 force: bool = False):
        self.spec = spec
        self.obj_path = obj_path
        self.pin_root = pin_root
        self.map_sizes = map_sizes
        self.force = force
        self._new_pins: list[Path] = []

    @property
    def dirs(self):
        return pin_dirs(self.pin_root)

    def prog_pin(self, prog: str) -> Path:
        return self.dirs["progs"] / prog

    def describe(self) -> str:
        return (f"load {self.obj_path.name}: pin {', '.join(self.spec.programs)} in {self.dirs['progs']}, "
                f"maps in {self.dirs['maps']}")

    def _why(self, ctx: Ctx) -> str:
        """Empty when the live object is the wanted one; else why it must (re)load."""
        if self.force:
            return "reload: fresh programs replace the running ones"
        if self.spec.name in ctx.cache.get("stale_objects", ()):
            return "the object is rebuilt first"
        if not self.obj_path.exists():
            return "not built yet"
        st = ctx.state.objects.get(self.spec.name)
        if not st:
            pinned = [p for p in self.spec.programs if self.prog_pin(p).exists()]
            return "not recorded in the state; loaded again" if pinned else "not loaded"
        sha = file_sha256(self.obj_path)
        if st.get("sha256") != sha:
            return f"object changed ({str(st.get('sha256'))[:12]} → {sha[:12]})"
        if st.get("map_sizes", {}) != self.map_sizes:
            return "map sizes changed"
        L = ctx.runner.libbpf
        decls = {d.name for d in maplayout.declared_maps(self.obj_path, self.map_sizes)}
        pinned_maps = {}
        for name in decls:
            info = observe.pinned_map(ctx.runner, self.dirs["maps"] / name)
            if info is None:
                return f"map {name} is not pinned"
            pinned_maps[maplayout.kernel_name(name)] = (name, info["id"])
        for prog in self.spec.programs:
            pin = self.prog_pin(prog)
            if not pin.exists():
                return f"program {prog} is not pinned"
            fd = L.obj_get(str(pin))
            try:
                info = L.prog_info(fd)
                rec = st.get("programs", {}).get(prog, {})
                if info["id"] != rec.get("id") or info["tag"] != rec.get("tag"):
                    return f"program {prog} pin was replaced outside nexusctl (id {info['id']}, tag {info['tag']})"
                for kname, mid in observe.prog_maps(ctx.runner, fd).items():
                    if kname in pinned_maps and pinned_maps[kname][1] != mid:
                        return f"{prog} still uses the old copy of map {pinned_maps[kname][0]}"
            finally:
                os.close(fd)
        return ""

    def satisfied(self, ctx: Ctx) -> bool:
        self.reason = self._why(ctx)
        if self.reason:
            # attachments of these programs must follow, even in a --check where nothing loads
            ctx.cache.setdefault("pending_programs", set()).update(self.spec.programs)
        return not self.reason

    def diff(self, ctx: Ctx):
        st = ctx.state.objects.get(self.spec.name) or {}
        new_sha = file_sha256(self.obj_path) if self.obj_path.exists() else None
        out = {}
        if st.get("sha256") != new_sha:
            out["sha256"] = [st.get("sha256"), new_sha]
        for prog in self.spec.programs:
            live = observe.pinned_prog(ctx.runner, self.prog_pin(prog))
            out[prog] = [f"id {live['id']} tag {live['tag']}" if live else None, "a new program"]
        return out

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
                    if f"{name}.inner" in self.map_sizes:
                        obj.set_inner_max_entries(m, self.map_sizes[f"{name}.inner"])
                    if is_private_map(name):
                        continue              # per-object working memory: not shared, not pinned
                    if pin.exists():
                        self._check_reusable(ctx, name, pin, obj.map_def(m))
                    else:
                        self._new_pins.append(pin)
                    obj.set_map_pin_path(m, str(pin))
                obj.load()
                ctx.cache["programs_loaded"] = True
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
        ctx.cache.get("pending_programs", set()).difference_update(self.spec.programs)
        ctx.state.objects[self.spec.name] = {
            "sha256": file_sha256(self.obj_path), "path": str(self.obj_path), "programs": progs,
            "maps": maps_used, "map_sizes": dict(self.map_sizes), "loaded_at": int(time.time()),
        }
        ctx.state.save()

    def _check_reusable(self, ctx: Ctx, name: str, pin: Path, want: dict) -> None:
        pinned = observe.pinned_map(ctx.runner, pin)
        if pinned and any(pinned.get(k) != want.get(k) for k in ("type_id", "key_size", "value_size",
                                                                  "max_entries", "flags")):
            raise OperationFailed(
                f"map {name} is pinned with another layout than {self.obj_path.name} declares "
                f"({pinned['type']}, key {pinned['key_size']} B, value {pinned['value_size']} B, "
                f"{pinned['max_entries']} entries)",
                "run `nexusctl apply`: it migrates maps whose layout changed before loading")

    def undo(self, ctx: Ctx) -> None:
        for p in reversed(self._new_pins):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        # A replaced program pin cannot be put back (the old program is gone once
        # nothing holds it): forget the record, so the next run loads it again.
        ctx.state.objects.pop(self.spec.name, None)


class WriteConfigMap(Action):
    """Write a config struct into a pinned map entry (packed from the object's BTF)."""
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

    def _layout(self):
        from nexusctl.tools.btf import Btf
        return Btf.from_elf(self.obj_path).struct(self.struct_name)

    def _packed(self) -> bytes:
        return self._layout().pack(self.values)

    def _live(self, ctx: Ctx) -> bytes | None:
        if not self.pin.exists():
            return None
        with ctx.runner.libbpf.MapHandle.pinned(str(self.pin)) as m:
            return m.lookup(self.key)

    def satisfied(self, ctx: Ctx) -> bool:
        if not self.obj_path.exists():
            self.reason = "object not built yet"
            return False
        if ctx.cache.get("stale_objects") and Path(self.obj_path).stem in ctx.cache["stale_objects"]:
            self.reason = "the object is rebuilt first"
            return False
        cur = self._live(ctx)
        if cur is None:
            self.reason = f"{self.pin.name} is not pinned yet"
            return False
        ok = cur == self._packed()
        self.reason = "" if ok else "live values differ from the config"
        return ok

    def diff(self, ctx: Ctx):
        """{field: [live, wanted]} for the fields that differ."""
        try:
            layout = self._layout()
            cur = self._live(ctx)
        except (OSError, ValueError):
            return None
        live = layout.unpack(cur) if cur is not None and len(cur) >= layout.size else {}
        want = layout.unpack(self._packed())
        return {k: [live.get(k), v] for k, v in want.items() if live.get(k) != v}

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

    def __init__(self, ifname: str, netns: str | None, prog_pin: Path, mode: str, role: str = "dns",
                 iface: str | None = None):
        self.ifname = ifname
        self.netns = netns
        self.prog_pin = prog_pin
        self.mode = mode                # native | generic | auto
        self.role = role                # dns | veth-peer
        self.iface = iface or iface_key(ifname, netns)
        self._attached = False
        self._replaced = False          # a nexus program was there before: undo cannot bring it back

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
        live = self._live(ctx)
        want = observe.pinned_prog(ctx.runner, self.prog_pin) if self.prog_pin.exists() else None
        if want is None or self.prog_pin.name in ctx.cache.get("pending_programs", ()):
            self.reason = "its program is (re)loaded first"
            return False
        if live.get("prog_id") != want["id"]:
            self.reason = ("not attached" if not live.get("prog_id") else
                           f"runs {live.get('prog_name')} id {live.get('prog_id')}, not the pinned id {want['id']}")
            return False
        if self.mode != "auto" and live.get("mode") != self.mode:
            self.reason = f"attached in {live.get('mode')} mode, config wants {self.mode}"
            return False
        self.reason = ""
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

    def diff(self, ctx: Ctx):
        live = observe.xdp_state(ctx.runner, self.ifname, self.netns) or {}
        want = observe.pinned_prog(ctx.runner, self.prog_pin) if self.prog_pin.exists() else None
        cur = f"{live['prog_name']} id {live['prog_id']} ({live.get('mode')})" if live.get("prog_id") else None
        pending = self.prog_pin.name in ctx.cache.get("pending_programs", ())
        new = f"{self.prog_pin.name} id {want['id']}" if want and not pending \
            else f"{self.prog_pin.name} (new, loaded by this run)"
        return {"xdp": [cur, f"{new} ({self.mode})"]}

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
        self._replaced = bool(live.get("prog_id"))
        reason = ""
        order = {"native": ["xdpdrv"], "generic": ["xdpgeneric"], "auto": ["xdpdrv", "xdpgeneric"]}[self.mode]
        if live.get("prog_id") and live.get("mode") in ("native", "generic"):
            current_flag = "xdpdrv" if live["mode"] == "native" else "xdpgeneric"
            if self.mode == "auto":
                # Replace in the mode that runs now: one atomic netlink replace, no gap
                # (native was refused before, or it would not be generic).
                order = [current_flag] + [f for f in order if f != current_flag]
                reason = (ctx.state.attachments.get(self.key) or {}).get("reason", "")
            elif current_flag != order[0]:
                # A program in the other mode blocks the attach ("can't be active at the same
                # time"): switching modes is the one case with a short gap.
                ctx.warn(f"{iface_key(self.ifname, self.netns)}: switching XDP from {live['mode']} to {self.mode} "
                         "mode detaches first; packets arriving in between are not inspected")
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
        # Replacing is atomic and the old program is gone once replaced: an interface
        # that ran nexus before keeps the new program (consistent, with the shared maps).
        if self._attached and not self._replaced:
            DetachXdp(self.ifname, self.netns).apply(ctx)


class DetachXdp(Action):
    kind = "detach-xdp"

    def __init__(self, ifname: str, netns: str | None, iface: str | None = None):
        self.ifname = ifname
        self.netns = netns
        self.iface = iface or iface_key(ifname, netns)

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
        self.reason = f"{live.get('prog_name')} id {live.get('prog_id')} is attached" if ours else ""
        return not ours

    def diff(self, ctx: Ctx):
        live = observe.xdp_state(ctx.runner, self.ifname, self.netns) or {}
        return {"xdp": [f"{live.get('prog_name')} id {live.get('prog_id')}", None]}

    def apply(self, ctx: Ctx) -> None:
        live = observe.xdp_state(ctx.runner, self.ifname, self.netns) or {}
        flag = "xdpgeneric" if live.get("mode") == "generic" else "xdpdrv"
        ctx.runner.run(["bpftool", "net", "detach", flag, "dev", self.ifname], netns=self.netns)
        ctx.state.attachments.pop(self.key, None)
        ctx.state.save()


# ---------------------------------------------------------------- TC

class EnsureClsact(Action):
    kind = "clsact"

    def __init__(self, ifname: str, netns: str | None, iface: str | None = None):
        self.ifname = ifname
        self.netns = netns
        self.iface = iface or iface_key(ifname, netns)
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
        ok = observe.has_clsact(ctx.runner, self.ifname, self.netns)
        self.reason = "" if ok else "no clsact qdisc yet"
        return ok

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

    def __init__(self, ifname: str, netns: str | None, prog_pin: Path, direction: str = "egress",
                 iface: str | None = None):
        self.ifname = ifname
        self.netns = netns
        self.prog_pin = prog_pin
        self.direction = direction
        self.iface = iface or iface_key(ifname, netns)
        self._attached = False
        self._replaced = False

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
        if not observe.link_exists(ctx.runner, self.ifname, self.netns):
            raise OperationFailed(f"interface {iface_key(self.ifname, self.netns)} does not exist",
                                  "fix `interfaces:` in the config or create the interface")
        want = observe.pinned_prog(ctx.runner, self.prog_pin) if self.prog_pin.exists() else None
        if want is None or self.prog_pin.name in ctx.cache.get("pending_programs", ()):
            self.reason = "its program is (re)loaded first"
            return False
        cur = self._ours(ctx)
        if not cur or cur["prog_id"] != want["id"]:
            self.reason = (f"runs {cur['prog_name']} id {cur['prog_id']}, not the pinned id {want['id']}"
                           if cur else "not attached")
            return False
        self.reason = ""
        if self.key not in ctx.state.attachments:
            ctx.state.attachments[self.key] = self._record(want["id"])
            ctx.state.save()
        return True

    def _record(self, prog_id: int) -> dict:
        return {"kind": f"tc-{self.direction}", "ifname": self.ifname, "netns": self.netns,
                "pin": str(self.prog_pin), "prog_id": prog_id, "pref": TC_PREF, "handle": TC_HANDLE}

    def diff(self, ctx: Ctx):
        cur = self._ours(ctx) if observe.link_exists(ctx.runner, self.ifname, self.netns) else None
        want = observe.pinned_prog(ctx.runner, self.prog_pin) if self.prog_pin.exists() else None
        pending = self.prog_pin.name in ctx.cache.get("pending_programs", ())
        return {f"tc-{self.direction}": [f"{cur['prog_name']} id {cur['prog_id']}" if cur else None,
                                         f"{self.prog_pin.name} id {want['id']}" if want and not pending
                                         else f"{self.prog_pin.name} (new, loaded by this run)"]}

    def apply(self, ctx: Ctx) -> None:
        cur = self._ours(ctx)
        if cur and not (cur["prog_name"] or "").startswith(observe.NEXUS_PROG_PREFIX):
            raise OperationFailed(f"tc {self.direction} filter pref {TC_PREF} on {self.ifname} belongs to "
                                  f"{cur['prog_name']}, not nexus", "remove that filter first")
        self._replaced = cur is not None
        ctx.runner.run(self.argv(), netns=self.netns)
        self._attached = True
        want = observe.pinned_prog(ctx.runner, self.prog_pin)
        ctx.state.attachments[self.key] = self._record(want["id"] if want else None)
        ctx.state.save()

    def undo(self, ctx: Ctx) -> None:
        if self._attached and not self._replaced:      # see AttachXdp.undo
            DetachTc(self.ifname, self.netns, self.direction).apply(ctx)


class DetachTc(Action):
    kind = "detach-tc"

    def __init__(self, ifname: str, netns: str | None, direction: str = "egress", iface: str | None = None):
        self.ifname = ifname
        self.netns = netns
        self.direction = direction
        self.iface = iface or iface_key(ifname, netns)

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

    def __init__(self, ifname: str, netns: str | None, iface: str | None = None):
        self.ifname = ifname
        self.netns = netns
        self.iface = iface or iface_key(ifname, netns)

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
