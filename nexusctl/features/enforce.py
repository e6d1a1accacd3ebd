"""The DNS egress enforcer: processes in configured cgroups (v2) may send DNS
(UDP/TCP to enforce.ports, 53 and 853 by default) only to their allow list.

Kernel side: bpf/nexus_enforce.c (cgroup connect4/connect6/sendmsg4/sendmsg6)
or, where the kernel accepts BPF LSM programs and enforce.lsm asks for it,
bpf/nexus_enforce_lsm.c (lsm socket_connect/socket_sendmsg, global).

Scope (see bpf/include/nexus_enforce.h): one policy per configured cgroup,
keyed by its cgroup id; the programs use the policy of the nearest configured
ancestor of the sender's cgroup. The cgroup programs are attached only to the
topmost configured cgroups: a cgroup program runs for every descendant too,
and attaching it again lower down would run it twice for one send (cgroup
programs of all ancestors run) and count every refusal twice.
"""
from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from nexusctl.engine import observe
from nexusctl.engine.actions import Action, Ctx
from nexusctl.engine.build import object_path
from nexusctl.errors import OperationFailed, Unsupported
from nexusctl.features.base import ObjectSpec

CG_OBJECT = "nexus_enforce"
LSM_OBJECT = "nexus_enforce_lsm"
CGROUP_HOOKS = ("connect4", "connect6", "sendmsg4", "sendmsg6")
CG_PROGS = {hook: f"nexus_enforce_{hook}" for hook in CGROUP_HOOKS}
LSM_PROGS = {"socket_connect": "nexus_enforce_lsm_connect", "socket_sendmsg": "nexus_enforce_lsm_sendmsg"}
POLICY_MAP, ALLOW_MAP = "nexus_enf_policy", "nexus_enf_allow"
COUNTERS_MAP, CG_STATS_MAP, EVENTS_MAP = "nexus_enf_counters", "nexus_enf_cg_stats", "nexus_enf_events"
MAX_DEPTH = 32                  # NEXUS_ENF_MAX_DEPTH
BPF_PROG_TYPE_LSM = 29
LSM_LIST = Path("/sys/kernel/security/lsm")
CGROUP2_PREFERRED = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))
MODES = {"audit": 0, "enforce": 1}
V4_MAPPED = b"\0" * 10 + b"\xff\xff"
POLICY_BITS = 32


# ---------------------------------------------------------------- cgroups

# arrays indexed by an enum: shown and migrated by enumerator name
MAP_KEY_ENUMS = {"nexus_enf_counters": "nexus_enf_counter"}

def cgroup2_mount() -> Path | None:
    """The cgroup v2 mount (the unified hierarchy), found at run time."""
    try:
        with open("/proc/self/mounts") as f:
            mounts = [Path(ln.split()[1].replace("\\040", " ")) for ln in f if ln.split()[2:3] == ["cgroup2"]]
    except OSError:
        return None
    for p in CGROUP2_PREFERRED:
        if p in mounts:
            return p
    return mounts[0] if mounts else None


def resolve_path(path: str, mount: Path) -> Path:
    """A configured path as a directory: relative to the cgroup2 mount; absolute
    and under a cgroup2 mount as is; other absolute paths (as /proc/PID/cgroup
    prints them, "/system.slice/x.service") relative to the mount."""
    p = Path(path)
    if p.is_absolute():
        m = observe.mount_of(p)
        if m and m[1] == "cgroup2":
            return p
        return mount / path.lstrip("/")
    return mount / p


@dataclass
class Resolved:
    index: int                  # position in enforce.cgroups = policy index
    path: str                   # as configured
    dir: Path
    level: int                  # 0 = the cgroup2 root
    cgroup_id: int | None       # None when the directory does not exist
    allow: list[str]
    ports: list[int]
    covered_by: Path | None = None   # nearest configured ancestor (whose attachment covers this one)

    @property
    def attached(self) -> bool:
        return self.covered_by is None


def resolve_cgroups(cfg, *, must_exist: bool = True) -> list[Resolved]:
    e = cfg.enforce
    mount = cgroup2_mount()
    if mount is None:
        raise Unsupported("the enforcer needs cgroup v2, and no cgroup2 filesystem is mounted",
                          "mount -t cgroup2 none /sys/fs/cgroup/unified (or boot with systemd's unified hierarchy)")
    out: list[Resolved] = []
    for i, cg in enumerate(e.cgroups):
        d = resolve_path(cg.path, mount)
        try:
            real = Path(os.path.realpath(d))
            st = os.stat(real)
            cgid = st.st_ino
        except FileNotFoundError:
            if must_exist:
                raise OperationFailed(f"enforce.cgroups[{i}]: cgroup {d} does not exist",
                                      f"create it (mkdir {d}) or fix enforce.cgroups[{i}].path in "
                                      f"{cfg.source}") from None
            real, cgid = d, None
        m = observe.mount_of(real)
        if not m or m[1] != "cgroup2":
            raise OperationFailed(f"enforce.cgroups[{i}]: {real} is not in a cgroup v2 hierarchy",
                                  f"use a path relative to {mount}")
        level = len(real.relative_to(m[0]).parts)
        if level >= MAX_DEPTH:
            raise OperationFailed(f"enforce.cgroups[{i}]: {real} is {level} levels deep; "
                                  f"the enforcer walks {MAX_DEPTH - 1} at most", "configure a cgroup higher up")
        out.append(Resolved(i, cg.path, real, level, cgid, list(cg.allow), e.ports_of(cg)))
    for r in out:
        ancestors = [o for o in out if o is not r and (r.dir == o.dir or o.dir in r.dir.parents)]
        if any(o.dir == r.dir for o in ancestors):
            raise OperationFailed(f"enforce.cgroups[{r.index}] and another entry name the same cgroup {r.dir}",
                                  "merge their allow lists")
        if ancestors:
            r.covered_by = max(ancestors, key=lambda o: o.level).dir
    return out


def link_name(dir_: Path, hook: str) -> str:
    """Stable pin name per (cgroup, hook): reordering the config does not reattach."""
    return f"enforce_{hook}_{hashlib.sha1(str(dir_).encode()).hexdigest()[:10]}"


# ---------------------------------------------------------------- BPF LSM

_lsm_cache: dict[str, tuple[bool, str]] = {}


def lsm_support(build_dir: Path) -> tuple[bool, str]:
    """(usable, why): bpf in the active LSM list, libbpf's probe, then a real
    load of nexus_enforce_lsm.o when it is built. Cached per process."""
    key = str(build_dir)
    if key in _lsm_cache:
        return _lsm_cache[key]
    res = _probe_lsm(build_dir)
    _lsm_cache[key] = res
    return res


def _probe_lsm(build_dir: Path) -> tuple[bool, str]:
    try:
        active = LSM_LIST.read_text().strip().split(",")
    except OSError:
        active = None
    if active is not None and "bpf" not in active:
        return False, f"bpf is not an active LSM ({','.join(active)})"
    if os.geteuid() != 0:
        return False, "cannot probe without root"
    from nexusctl.tools.runner import Runner
    runner = Runner()
    L = runner.libbpf
    from nexusctl.tools import ringbuf
    try:
        if not ringbuf.probe_prog_type(BPF_PROG_TYPE_LSM):
            return False, "the kernel refuses LSM programs (libbpf probe)"
    except OSError as e:
        return False, f"the kernel refuses LSM programs ({os.strerror(e.errno or errno.EINVAL)})"
    obj = object_path(build_dir, LSM_OBJECT)
    if not obj.exists():
        return True, "LSM programs load (nexus_enforce_lsm.o not built yet)"
    try:
        with L.BpfObject(str(obj)) as o:
            o.load()
    except OSError as e:
        return False, f"the kernel refuses {obj.name}: {os.strerror(e.errno) if e.errno else e}"
    return True, "LSM programs load"


def use_lsm(cfg) -> bool:
    """Does this config run the LSM variant here? Raises Unsupported (exit 3) when
    the config requires LSM and the kernel cannot."""
    e = cfg.enforce
    if not e.enabled or e.lsm == "off":
        return False
    ok, why = lsm_support(cfg.build_dir)
    if ok:
        return True
    if e.lsm == "required":
        raise Unsupported(f"BPF LSM is not supported on this kernel: {why}",
                          "set enforce.lsm: auto or off (cgroup socket hooks), or boot a kernel with "
                          "CONFIG_BPF_LSM=y and bpf in lsm=")
    return False


# ---------------------------------------------------------------- feature hooks

OBJECTS = [
    ObjectSpec(CG_OBJECT, tuple(CG_PROGS.values()), lambda c: c.enforce.enabled and not use_lsm(c),
               "DNS egress enforcer (cgroup socket hooks)"),
    ObjectSpec(LSM_OBJECT, tuple(LSM_PROGS.values()), lambda c: c.enforce.enabled and use_lsm(c),
               "DNS egress enforcer (BPF LSM)"),
]


def map_sizes(cfg) -> dict[str, int]:
    return {}


def links(cfg) -> list:
    from nexusctl.engine.links import LinkSpec  # engine.links imports the feature registry
    if not cfg.enforce.enabled:
        return []
    if use_lsm(cfg):
        return [LinkSpec(f"enforce_lsm_{hook}", prog, "lsm", f"lsm {hook}") for hook, prog in LSM_PROGS.items()]
    out = []
    for r in resolve_cgroups(cfg):
        if not r.attached:
            continue
        for hook in CGROUP_HOOKS:
            out.append(LinkSpec(link_name(r.dir, hook), CG_PROGS[hook], "cgroup", str(r.dir),
                                cgroup=(str(r.dir), hook)))
    return out


def extra_actions(cfg, state) -> list[Action]:
    if not cfg.enforce.enabled:
        return []
    return [SyncEnforcePolicy(cfg)]


def unsupported_object(app, name: str) -> str | None:
    """Why `verify` should skip object `name` on this host (None: load it)."""
    if name != LSM_OBJECT:
        return None
    ok, why = lsm_support(app.config.build_dir)
    return None if ok else f"BPF LSM not supported here: {why}"


def doctor_checks(app) -> list[dict]:
    from nexusctl.ops.doctor import check
    cfg = app.config
    e = cfg.enforce
    rows = []
    mnt = cgroup2_mount()
    rows.append(check("enforce: cgroup v2", mnt is not None, str(mnt) if mnt else "not mounted",
                      "mount -t cgroup2 none /sys/fs/cgroup/unified", required=e.enabled, group="enforce"))
    ok, why = lsm_support(cfg.build_dir)
    rows.append(check("enforce: BPF LSM", ok, why if ok else f"not supported: {why}",
                      "optional: the cgroup hooks enforce without it (a kernel with CONFIG_BPF_LSM=y and "
                      "lsm=...,bpf adds sockets passed in from other cgroups)",
                      required=e.enabled and e.lsm == "required", group="enforce"))
    if e.enabled and mnt is not None:
        for r in resolve_cgroups(cfg, must_exist=False):
            rows.append(check(f"enforce: cgroup {r.path}", r.cgroup_id is not None, str(r.dir),
                              f"mkdir {r.dir} (or fix enforce.cgroups[{r.index}].path)", group="enforce"))
    return rows


# ---------------------------------------------------------------- policy maps

def _addr_words(packed16: bytes) -> list[int]:
    """16 network-order bytes as four u32 whose memory holds those bytes (BTF packs little-endian)."""
    return [int.from_bytes(packed16[i:i + 4], "little") for i in range(0, 16, 4)]


def allow_key(net: str, index: int) -> dict:
    """struct nexus_enf_key values for one allow entry of policy `index`."""
    n = ipaddress.ip_network(net)
    if n.version == 4:
        addr = V4_MAPPED + n.network_address.packed
        bits = 96 + n.prefixlen
    else:
        addr = n.network_address.packed
        bits = n.prefixlen
    return {"prefixlen": POLICY_BITS + bits, "policy": index, "addr": _addr_words(addr)}


def policy_value(r: Resolved, mode: str) -> dict:
    return {"index": r.index, "mode": MODES[mode], "ports": list(r.ports)}


class SyncEnforcePolicy(Action):
    """Make nexus_enf_policy (cgroup id → policy) and nexus_enf_allow (LPM:
    policy, prefix) hold exactly what the config says. Allow entries go in
    before the policies that use them, and stale policies go before their
    allow entries, so a send never meets a policy without its list."""
    kind = "enforce-policy"

    def __init__(self, cfg):
        self.cfg = cfg
        self.maps = cfg.pin_root / "maps"         # engine.objects.pin_dirs layout
        obj = LSM_OBJECT if use_lsm(cfg) else CG_OBJECT
        self.obj_path = object_path(cfg.build_dir, obj)
        self._old: tuple[dict, dict] | None = None

    def describe(self) -> str:
        e = self.cfg.enforce
        n = sum(len(c.allow) for c in e.cgroups)
        return (f"write enforcer policy: {len(e.cgroups)} cgroup(s), {n} allowed prefix(es), mode {e.mode} "
                f"({self.maps / POLICY_MAP}, {self.maps / ALLOW_MAP})")

    def _desired(self) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
        from nexusctl.tools.btf import Btf
        btf = Btf.from_elf(self.obj_path)
        pol, key = btf.struct("nexus_enf_policy"), btf.struct("nexus_enf_key")
        policies, allow = {}, {}
        for r in resolve_cgroups(self.cfg):
            policies[r.cgroup_id.to_bytes(8, "little")] = pol.pack(policy_value(r, self.cfg.enforce.mode))
            for net in r.allow:
                allow[key.pack(allow_key(net, r.index))] = b"\x01"
        return policies, allow

    @staticmethod
    def _read(m) -> dict[bytes, bytes]:
        return {k: v for k, v in m.items()}

    def satisfied(self, ctx: Ctx) -> bool:
        if not self.obj_path.exists() or not (self.maps / POLICY_MAP).exists():
            return False
        want_pol, want_allow = self._desired()
        L = ctx.runner.libbpf
        with L.MapHandle.pinned(str(self.maps / POLICY_MAP)) as p, \
                L.MapHandle.pinned(str(self.maps / ALLOW_MAP)) as a:
            return self._read(p) == want_pol and self._read(a) == want_allow

    def apply(self, ctx: Ctx) -> None:
        want_pol, want_allow = self._desired()
        L = ctx.runner.libbpf
        ctx.runner.kernel_action(f"bpf_map_update_elem/delete_elem {self.maps / ALLOW_MAP}, "
                                 f"{self.maps / POLICY_MAP} ({self.describe()})")
        with L.MapHandle.pinned(str(self.maps / POLICY_MAP)) as p, \
                L.MapHandle.pinned(str(self.maps / ALLOW_MAP)) as a:
            self._old = (self._read(p), self._read(a))
            self._write(p, a, want_pol, want_allow)

    @staticmethod
    def _write(p, a, want_pol: dict, want_allow: dict) -> None:
        have_pol, have_allow = {k: v for k, v in p.items()}, {k: v for k, v in a.items()}
        for k, v in want_allow.items():
            if have_allow.get(k) != v:
                a.update(k, v)
        for k, v in want_pol.items():
            if have_pol.get(k) != v:
                p.update(k, v)
        for k in have_pol.keys() - want_pol.keys():
            p.delete(k)
        for k in have_allow.keys() - want_allow.keys():
            a.delete(k)

    def undo(self, ctx: Ctx) -> None:
        if self._old is None or not (self.maps / POLICY_MAP).exists():
            return
        L = ctx.runner.libbpf
        with L.MapHandle.pinned(str(self.maps / POLICY_MAP)) as p, \
                L.MapHandle.pinned(str(self.maps / ALLOW_MAP)) as a:
            self._write(p, a, *self._old)
