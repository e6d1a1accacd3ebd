"""Read-only looks at the live host: pins, XDP and TC attachments, mounts.
Everything goes through the runner; nothing here changes state."""
from __future__ import annotations

import os
from pathlib import Path

from nexusctl.tools.runner import Runner, netns_path

STAGING_PREFIX = "staging_"   # a pin being swapped in (pinned beside, then renamed over); never listed

BPF_FS = "bpf"
XDP_MODES = {1: "native", 2: "generic", 3: "offload", 4: "multi"}
NEXUS_PROG_PREFIX = "nexus_"


def mount_of(path: Path) -> tuple[str, str] | None:
    """(mountpoint, fstype) of the filesystem holding path (or the nearest existing parent)."""
    best = None
    try:
        with open("/proc/self/mounts") as f:
            mounts = [ln.split()[:3] for ln in f]
    except OSError:
        return None
    p = str(path)
    for _, mnt, fstype in mounts:
        mnt = mnt.replace("\\040", " ")
        if p == mnt or p.startswith(mnt.rstrip("/") + "/"):
            if best is None or len(mnt) >= len(best[0]):
                best = (mnt, fstype)
    return best


def on_bpffs(path: Path) -> bool:
    m = mount_of(path)
    return bool(m and m[1] == BPF_FS)


def pinned_prog(runner: Runner, path: Path) -> dict | None:
    """Info of the program pinned at path, or None when there is no pin."""
    if not path.exists():
        return None
    L = runner.libbpf
    fd = L.obj_get(str(path))
    try:
        return L.prog_info(fd)
    finally:
        os.close(fd)


def pinned_map(runner: Runner, path: Path) -> dict | None:
    if not path.exists():
        return None
    L = runner.libbpf
    fd = L.obj_get(str(path))
    try:
        return L.map_info(fd)
    finally:
        os.close(fd)


def prog_maps(runner: Runner, prog_fd: int) -> dict[str, int]:
    """{kernel map name (15 characters at most): map id} of the maps a loaded program uses."""
    L = runner.libbpf
    out = {}
    for mid in L.prog_map_ids(prog_fd):
        try:
            fd = L.map_fd_by_id(mid)
        except OSError:
            continue
        try:
            out[L.map_info(fd)["name"]] = mid
        finally:
            os.close(fd)
    return out


def link_exists(runner: Runner, ifname: str, netns: str | None) -> bool:
    if netns and not netns_path(netns).exists():
        return False
    res = runner.run(["ip", "-j", "link", "show", "dev", ifname], netns=netns, check=False, quiet=True)
    return res.rc == 0


def link_show(runner: Runner, ifname: str, netns: str | None) -> dict | None:
    if netns and not netns_path(netns).exists():
        return None
    res = runner.run(["ip", "-j", "link", "show", "dev", ifname], netns=netns, check=False, quiet=True)
    if res.rc != 0:
        return None
    data = res.json() or []
    return data[0] if data else None


def xdp_state(runner: Runner, ifname: str, netns: str | None) -> dict | None:
    """None if the interface is missing; {} if no XDP program; else prog id/name and mode."""
    link = link_show(runner, ifname, netns)
    if link is None:
        return None
    xdp = link.get("xdp")
    if not xdp:
        return {}
    prog = xdp.get("prog") or {}
    attached = xdp.get("attached") or []
    if not prog and attached:
        prog = attached[0].get("prog", {})
        mode = attached[0].get("mode")
    else:
        mode = xdp.get("mode")
    return {"prog_id": prog.get("id"), "prog_name": prog.get("name", ""),
            "mode": XDP_MODES.get(mode, str(mode)), "ifindex": link.get("ifindex")}


def qdiscs(runner: Runner, ifname: str, netns: str | None) -> list[dict]:
    res = runner.run(["tc", "-j", "qdisc", "show", "dev", ifname], netns=netns, check=False, quiet=True)
    if res.rc != 0:
        return []
    return res.json() or []


def has_clsact(runner: Runner, ifname: str, netns: str | None) -> bool:
    return any(q.get("kind") == "clsact" for q in qdiscs(runner, ifname, netns))


def tc_filters(runner: Runner, ifname: str, netns: str | None, direction: str) -> list[dict]:
    """BPF filters on the clsact hook: [{pref, handle, prog_id, prog_name, bpf_name}]."""
    return tc_filters_or_none(runner, ifname, netns, direction) or []


def tc_filters_or_none(runner: Runner, ifname: str, netns: str | None, direction: str) -> list[dict] | None:
    """As tc_filters, but None when the interface (or its namespace) does not exist:
    one command answers both questions."""
    if netns and not netns_path(netns).exists():
        return None
    res = runner.run(["tc", "-j", "filter", "show", "dev", ifname, direction], netns=netns,
                     check=False, quiet=True)
    if res.rc != 0:
        return None if "Cannot find device" in res.stderr or "does not exist" in res.stderr else []
    out = []
    for f in res.json() or []:
        opts = f.get("options")
        if not opts or f.get("kind") != "bpf":
            continue
        prog = opts.get("prog", {})
        out.append({"pref": f.get("pref"), "handle": opts.get("handle"), "prog_id": prog.get("id"),
                    "prog_name": prog.get("name", ""), "bpf_name": opts.get("bpf_name", "")})
    return out


def pinned_programs(runner: Runner, progs_dir: Path):
    """(pin, fd) for each program pinned in progs_dir, sorted, staging pins skipped.
    Each fd is open only during its turn of the loop."""
    if not progs_dir.exists():
        return
    L = runner.libbpf
    for pin in sorted(progs_dir.iterdir()):
        if pin.name.startswith(STAGING_PREFIX):
            continue
        try:
            fd = L.obj_get(str(pin))
        except OSError:
            continue
        try:
            yield pin, fd
        finally:
            os.close(fd)
