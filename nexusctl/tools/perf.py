"""perf_event_open and BPF links for pinned programs, without bpftool.

bpftool 7.1 cannot attach tracepoint, uprobe or perf_event programs. Here a
pinned program is attached by opening the perf event (tracepoint id from
tracefs, the uprobe PMU with a path and file offset, or a software/hardware
counter) and creating a BPF link on it (BPF_LINK_CREATE, BPF_PERF_EVENT);
cgroup programs get a link on the cgroup directory. The link is pinned under
<pin_root>/links/, so it outlives the nexusctl process, and removing the pin
detaches it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import struct
from ctypes import Structure, c_int, c_long, c_uint16, c_uint32, c_uint64
from pathlib import Path

from nexusctl.tools import libbpf

NR_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}.get(os.uname().machine, 298)
PERF_TYPE_HARDWARE, PERF_TYPE_SOFTWARE, PERF_TYPE_TRACEPOINT = 0, 1, 2
PERF_COUNT_HW_CPU_CYCLES, PERF_COUNT_HW_INSTRUCTIONS = 0, 1
PERF_COUNT_HW_CACHE_REFERENCES, PERF_COUNT_HW_CACHE_MISSES = 2, 3
PERF_COUNT_SW_CPU_CLOCK = 0
PERF_FLAG_FD_CLOEXEC = 1 << 3
ATTR_FLAG_DISABLED = 1 << 0
ATTR_FLAG_FREQ = 1 << 10

# enum bpf_attach_type (uapi/linux/bpf.h)
BPF_CGROUP_INET4_CONNECT = 10
BPF_CGROUP_INET6_CONNECT = 11
BPF_CGROUP_UDP4_SENDMSG = 14
BPF_CGROUP_UDP6_SENDMSG = 15
BPF_LSM_MAC = 27
BPF_PERF_EVENT = 41
CGROUP_ATTACH_TYPES = {"connect4": BPF_CGROUP_INET4_CONNECT, "connect6": BPF_CGROUP_INET6_CONNECT,
                       "sendmsg4": BPF_CGROUP_UDP4_SENDMSG, "sendmsg6": BPF_CGROUP_UDP6_SENDMSG}

TRACEFS_CANDIDATES = [Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing")]
UPROBE_PMU = Path("/sys/bus/event_source/devices/uprobe")


class perf_event_attr(Structure):
    _fields_ = [
        ("type", c_uint32), ("size", c_uint32), ("config", c_uint64), ("sample_period", c_uint64),
        ("sample_type", c_uint64), ("read_format", c_uint64), ("flags", c_uint64),
        ("wakeup_events", c_uint32), ("bp_type", c_uint32), ("config1", c_uint64), ("config2", c_uint64),
        ("branch_sample_type", c_uint64), ("sample_regs_user", c_uint64), ("sample_stack_user", c_uint32),
        ("clockid", c_int), ("sample_regs_intr", c_uint64), ("aux_watermark", c_uint32),
        ("sample_max_stack", c_uint16), ("_reserved_2", c_uint16), ("aux_sample_size", c_uint32),
        ("_reserved_3", c_uint32), ("sig_data", c_uint64), ("config3", c_uint64),
    ]


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.syscall.restype = c_long


class PerfError(OSError):
    pass


def perf_event_open(attr: perf_event_attr, pid: int = -1, cpu: int = 0, group_fd: int = -1) -> int:
    attr.size = ctypes.sizeof(perf_event_attr)
    fd = _libc.syscall(c_long(NR_PERF_EVENT_OPEN), ctypes.byref(attr), c_int(pid), c_int(cpu), c_int(group_fd),
                       ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC))
    if fd < 0:
        err = ctypes.get_errno()
        raise PerfError(err, f"perf_event_open(type={attr.type}, config={attr.config}): {os.strerror(err)}")
    return fd


def tracefs() -> Path:
    for p in TRACEFS_CANDIDATES:
        if (p / "events").is_dir():
            return p
    raise PerfError(errno.ENOENT, "tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)")


def ensure_tracefs(runner) -> Path:
    try:
        return tracefs()
    except PerfError:
        runner.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS_CANDIDATES[0])], check=False)
        return tracefs()


def tracepoint_id(category: str, name: str) -> int:
    p = tracefs() / "events" / category / name / "id"
    try:
        return int(p.read_text().strip())
    except FileNotFoundError:
        raise PerfError(errno.ENOENT, f"tracepoint {category}:{name} does not exist on this kernel") from None


def open_tracepoint(category: str, name: str, cpu: int = 0) -> int:
    attr = perf_event_attr(type=PERF_TYPE_TRACEPOINT, config=tracepoint_id(category, name), sample_period=1,
                           wakeup_events=1)
    # A tracepoint event opened for pid -1 on one CPU still fires for every CPU
    # once a BPF program is attached to it.
    return perf_event_open(attr, pid=-1, cpu=cpu)


def _pmu_type(pmu: Path) -> int:
    try:
        return int((pmu / "type").read_text())
    except FileNotFoundError:
        raise PerfError(errno.ENOENT, f"{pmu.name} PMU missing (kernel needs CONFIG_UPROBE_EVENTS)") from None


def elf_symbol_offset(path: str, symbol: str) -> int:
    """File offset of a function symbol in an ELF shared object (for the uprobe PMU)."""
    offsets = elf_function_offsets(path)
    if symbol not in offsets:
        raise PerfError(errno.ENOENT, f"symbol {symbol} not found in {path}")
    return offsets[symbol]


def elf_function_offsets(path: str) -> dict[str, int]:
    """{function name: file offset} of the defined functions in an ELF object's
    .symtab/.dynsym (version suffixes dropped), cached while the file is unchanged."""
    st = os.stat(path)
    return _elf_function_offsets(os.path.realpath(path), st.st_ino, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=16)
def _elf_function_offsets(path: str, _ino: int, _mtime: int, _size: int) -> dict[str, int]:
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise PerfError(errno.ENOEXEC, f"{path} is not a 64-bit ELF file")
    e_phoff, e_shoff = struct.unpack_from("<QQ", data, 0x20)
    e_phentsize, e_phnum, e_shentsize, e_shnum = struct.unpack_from("<HHHH", data, 0x36)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, e_shoff + i * e_shentsize) for i in range(e_shnum)]
    loads = []
    for i in range(e_phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = struct.unpack_from("<IIQQQQQQ", data,
                                                                           e_phoff + i * e_phentsize)
        if p_type == 1:                                              # PT_LOAD
            loads.append((p_vaddr, p_filesz, p_offset))

    def file_offset(value: int) -> int:
        for vaddr, filesz, offset in loads:
            if vaddr <= value < vaddr + filesz:
                return value - vaddr + offset
        return value

    out: dict[str, int] = {}
    for sh in sections:
        if sh[1] not in (2, 11):          # SHT_SYMTAB, SHT_DYNSYM
            continue
        s_off = sections[sh[6]][4]
        for off in range(sh[4], sh[4] + sh[5], 24):
            st_name, st_info, _, st_shndx, st_value, _ = struct.unpack_from("<IBBHQQ", data, off)
            if st_shndx == 0 or (st_info & 0xF) not in (2, 10):   # STT_FUNC, STT_GNU_IFUNC
                continue
            end = data.index(b"\0", s_off + st_name)
            name = data[s_off + st_name:end].decode(errors="replace").split("@")[0]
            out.setdefault(name, file_offset(st_value))
    return out


def uprobe_retprobe_config() -> int:
    """The uprobe PMU's config bit that makes a return probe (format/retprobe, "config:0")."""
    try:
        fmt = (UPROBE_PMU / "format" / "retprobe").read_text().strip()
        return 1 << int(fmt.split(":", 1)[1])
    except (OSError, ValueError, IndexError):
        return 1


def open_uprobe(path: str, offset: int, retprobe: bool = False, pid: int = -1, cpu: int = 0) -> int:
    ptype = _pmu_type(UPROBE_PMU)
    cpath = ctypes.create_string_buffer(os.fsencode(path))
    attr = perf_event_attr(type=ptype, config=uprobe_retprobe_config() if retprobe else 0, sample_period=1,
                           wakeup_events=1)
    attr.config1 = ctypes.addressof(cpath)
    attr.config2 = offset
    # pid -1 with cpu 0 would be per-CPU; a uprobe on every process needs pid -1 and cpu 0..n,
    # but the kernel fires uprobe perf events on any CPU for pid -1/cpu 0 only when attached
    # to a BPF program, like tracepoints.
    return perf_event_open(attr, pid=pid, cpu=cpu if pid == -1 else -1)


def open_counter(ptype: int, config: int, cpu: int, freq: int | None = None, period: int | None = None) -> int:
    attr = perf_event_attr(type=ptype, config=config)
    if freq:
        attr.sample_period = freq
        attr.flags |= ATTR_FLAG_FREQ
    else:
        attr.sample_period = period or 1_000_000
    return perf_event_open(attr, pid=-1, cpu=cpu)


def link_create(prog_fd: int, target_fd: int, attach_type: int) -> int:
    L = libbpf.lib()
    fn = L.bpf_link_create
    fn.restype = c_int
    fn.argtypes = [c_int, c_int, c_int, ctypes.c_void_p]
    fd = fn(prog_fd, target_fd, attach_type, None)
    if fd < 0:
        err = -fd if fd != -1 else ctypes.get_errno()
        raise PerfError(err, f"BPF_LINK_CREATE (attach type {attach_type}): {os.strerror(err)}")
    return fd


def attach_pinned(prog_pin: str, target_fd: int, attach_type: int, link_pin: str) -> int:
    """Create a link from a pinned program to target_fd and pin it; returns the link id."""
    prog_fd = libbpf.obj_get(prog_pin)
    try:
        link_fd = link_create(prog_fd, target_fd, attach_type)
    finally:
        os.close(prog_fd)
    try:
        tmp = link_pin + "_staging"
        if os.path.exists(tmp):
            os.unlink(tmp)
        libbpf.obj_pin(link_fd, tmp)
        os.replace(tmp, link_pin)          # attach-new-then-drop-old when a link is replaced
        return libbpf.link_info(link_fd)["id"]
    finally:
        os.close(link_fd)


def link_prog_id(link_pin: str) -> int | None:
    try:
        fd = libbpf.obj_get(link_pin)
    except OSError:
        return None
    try:
        return libbpf.link_info(fd)["prog_id"]
    finally:
        os.close(fd)


def perf_event_available(ptype: int, config: int) -> tuple[bool, str]:
    """Can this counter be opened here? (VMs often expose no hardware PMU.)"""
    try:
        fd = open_counter(ptype, config, cpu=0, period=1_000_000_000)
    except PerfError as e:
        return False, os.strerror(e.errno) if e.errno else str(e)
    os.close(fd)
    return True, ""
