"""ctypes bindings on libbpf.so.1 (libbpf 1.1 on Debian 12).

Used where bpftool cannot do the job or is too slow: loading objects with
pinned-map reuse, reading program/map info, batch map updates, BPF_PROG_TEST_RUN,
and (later) tracing links and ring buffers. Only nexusctl.tools.runner and
tests import this module; everything else goes through the runner.

Every function raises LibbpfError (errno + what was being done) on failure.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno as errno_mod
import os
import threading
from ctypes import (CFUNCTYPE, POINTER, Structure, byref, c_bool, c_char, c_char_p, c_int, c_long,
                    c_size_t, c_uint8, c_uint32, c_uint64, c_void_p, create_string_buffer)
from dataclasses import dataclass
from typing import Iterator

BPF_OBJ_NAME_LEN = 16
BPF_TAG_SIZE = 8

# enum bpf_map_type values we name in output (uapi/linux/bpf.h)
MAP_TYPES = {
    1: "hash", 2: "array", 3: "prog_array", 4: "perf_event_array", 5: "percpu_hash",
    6: "percpu_array", 7: "stack_trace", 8: "cgroup_array", 9: "lru_hash", 10: "lru_percpu_hash",
    11: "lpm_trie", 12: "array_of_maps", 13: "hash_of_maps", 14: "devmap", 15: "sockmap",
    16: "cpumap", 17: "xskmap", 18: "sockhash", 19: "cgroup_storage", 20: "reuseport_sockarray",
    21: "percpu_cgroup_storage", 22: "queue", 23: "stack", 24: "sk_storage", 25: "devmap_hash",
    26: "struct_ops", 27: "ringbuf", 28: "inode_storage", 29: "task_storage", 30: "bloom_filter",
    31: "user_ringbuf", 32: "cgrp_storage",
}
PERCPU_MAP_TYPES = {5, 6, 10, 21}
PROG_TYPES = {
    1: "socket_filter", 2: "kprobe", 3: "sched_cls", 4: "sched_act", 5: "tracepoint", 6: "xdp",
    7: "perf_event", 8: "cgroup_skb", 9: "cgroup_sock", 10: "lwt_in", 11: "lwt_out", 12: "lwt_xmit",
    13: "sock_ops", 14: "sk_skb", 15: "cgroup_device", 16: "sk_msg", 17: "raw_tracepoint",
    18: "cgroup_sock_addr", 19: "lwt_seg6local", 20: "lirc_mode2", 21: "sk_reuseport",
    22: "flow_dissector", 23: "cgroup_sysctl", 24: "raw_tracepoint_writable", 25: "cgroup_sockopt",
    26: "tracing", 27: "struct_ops", 28: "ext", 29: "lsm", 30: "sk_lookup", 31: "syscall",
    32: "netfilter",
}
BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
VERIFIER_LOG_SIZE = 1 << 20
LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG = 0, 1, 2


class LibbpfError(OSError):
    def __init__(self, what: str, err: int, log: str = ""):
        super().__init__(err, f"{what}: {os.strerror(err)}")
        self.what = what
        self.log = log


class bpf_prog_info(Structure):
    _fields_ = [
        ("type", c_uint32), ("id", c_uint32), ("tag", c_uint8 * BPF_TAG_SIZE),
        ("jited_prog_len", c_uint32), ("xlated_prog_len", c_uint32),
        ("jited_prog_insns", c_uint64), ("xlated_prog_insns", c_uint64),
        ("load_time", c_uint64), ("created_by_uid", c_uint32), ("nr_map_ids", c_uint32),
        ("map_ids", c_uint64), ("name", c_char * BPF_OBJ_NAME_LEN), ("ifindex", c_uint32),
        ("gpl_compatible", c_uint32), ("netns_dev", c_uint64), ("netns_ino", c_uint64),
        ("nr_jited_ksyms", c_uint32), ("nr_jited_func_lens", c_uint32),
        ("jited_ksyms", c_uint64), ("jited_func_lens", c_uint64), ("btf_id", c_uint32),
        ("func_info_rec_size", c_uint32), ("func_info", c_uint64), ("nr_func_info", c_uint32),
        ("nr_line_info", c_uint32), ("line_info", c_uint64), ("jited_line_info", c_uint64),
        ("nr_jited_line_info", c_uint32), ("line_info_rec_size", c_uint32),
        ("jited_line_info_rec_size", c_uint32), ("nr_prog_tags", c_uint32), ("prog_tags", c_uint64),
        ("run_time_ns", c_uint64), ("run_cnt", c_uint64), ("recursion_misses", c_uint64),
        ("verified_insns", c_uint32), ("attach_btf_obj_id", c_uint32), ("attach_btf_id", c_uint32),
        ("_pad", c_uint32),
    ]


class bpf_map_info(Structure):
    _fields_ = [
        ("type", c_uint32), ("id", c_uint32), ("key_size", c_uint32), ("value_size", c_uint32),
        ("max_entries", c_uint32), ("map_flags", c_uint32), ("name", c_char * BPF_OBJ_NAME_LEN),
        ("ifindex", c_uint32), ("btf_vmlinux_value_type_id", c_uint32), ("netns_dev", c_uint64),
        ("netns_ino", c_uint64), ("btf_id", c_uint32), ("btf_key_type_id", c_uint32),
        ("btf_value_type_id", c_uint32), ("_pad", c_uint32), ("map_extra", c_uint64),
    ]


class bpf_link_info_hdr(Structure):
    # the fixed head of struct bpf_link_info; the union after it is read raw
    _fields_ = [("type", c_uint32), ("id", c_uint32), ("prog_id", c_uint32), ("_pad", c_uint32),
                ("union", c_uint8 * 64)]


class bpf_map_create_opts(Structure):
    _fields_ = [("sz", c_size_t), ("btf_fd", c_uint32), ("btf_key_type_id", c_uint32),
                ("btf_value_type_id", c_uint32), ("btf_vmlinux_value_type_id", c_uint32),
                ("inner_map_fd", c_uint32), ("map_flags", c_uint32), ("map_extra", c_uint64),
                ("numa_node", c_uint32), ("map_ifindex", c_uint32)]


class bpf_btf_info(Structure):
    _fields_ = [("btf", c_uint64), ("btf_size", c_uint32), ("id", c_uint32), ("name", c_uint64),
                ("name_len", c_uint32), ("kernel_btf", c_uint32)]


class bpf_test_run_opts(Structure):
    _fields_ = [
        ("sz", c_size_t), ("data_in", c_void_p), ("data_out", c_void_p),
        ("data_size_in", c_uint32), ("data_size_out", c_uint32),
        ("ctx_in", c_void_p), ("ctx_out", c_void_p), ("ctx_size_in", c_uint32),
        ("ctx_size_out", c_uint32), ("retval", c_uint32), ("repeat", c_int),
        ("duration", c_uint32), ("flags", c_uint32), ("cpu", c_uint32), ("batch_size", c_uint32),
    ]


class bpf_map_batch_opts(Structure):
    _fields_ = [("sz", c_size_t), ("elem_flags", c_uint64), ("flags", c_uint64)]


class bpf_object_open_opts(Structure):
    _fields_ = [
        ("sz", c_size_t), ("object_name", c_char_p), ("relaxed_maps", c_bool),
        ("pin_root_path", c_char_p), ("_stub", c_uint32), ("kconfig", c_char_p),
        ("btf_custom_path", c_char_p), ("kernel_log_buf", c_char_p), ("kernel_log_size", c_size_t),
        ("kernel_log_level", c_uint32),
    ]


_PRINT_FN = CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)

_lib = None
_libc = None
_lock = threading.Lock()
_log_lines: list[str] = []
_print_cb = None


def _load_lib():
    global _lib, _libc, _print_cb
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        name = "libbpf.so.1"
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError:
            found = ctypes.util.find_library("bpf")
            if not found:
                raise LibbpfError("loading libbpf.so.1 (apt-get install libbpf1)", errno_mod.ENOENT) from None
            lib = ctypes.CDLL(found, use_errno=True)
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]
        libc.vsnprintf.restype = c_int
        _declare(lib)

        def _cb(level, fmt, va):
            buf = create_string_buffer(16384)
            libc.vsnprintf(buf, 16384, fmt, va)
            text = buf.value.decode(errors="replace")
            if level <= LIBBPF_INFO or os.environ.get("NEXUS_LIBBPF_DEBUG"):
                _log_lines.extend(text.rstrip("\n").split("\n"))
                del _log_lines[:-4000]
            return 0

        _print_cb = _PRINT_FN(_cb)
        lib.libbpf_set_print(_print_cb)
        _libc = libc
        _lib = lib
    return _lib


def _declare(lib) -> None:
    P = c_void_p
    sig = {
        "libbpf_set_print": (P, [_PRINT_FN]),
        "bpf_object__open_file": (P, [c_char_p, POINTER(bpf_object_open_opts)]),
        "bpf_object__load": (c_int, [P]),
        "bpf_object__close": (None, [P]),
        "bpf_object__next_map": (P, [P, P]),
        "bpf_object__next_program": (P, [P, P]),
        "bpf_object__find_program_by_name": (P, [P, c_char_p]),
        "bpf_object__find_map_by_name": (P, [P, c_char_p]),
        "bpf_map__name": (c_char_p, [P]),
        "bpf_map__set_pin_path": (c_int, [P, c_char_p]),
        "bpf_map__set_max_entries": (c_int, [P, c_uint32]),
        "bpf_map__max_entries": (c_uint32, [P]),
        "bpf_map__is_internal": (c_bool, [P]),
        "bpf_map__inner_map": (P, [P]),
        "bpf_map__set_inner_map_fd": (c_int, [P, c_int]),
        "bpf_map__map_extra": (c_uint64, [P]),
        "bpf_map_create": (c_int, [c_int, c_char_p, c_uint32, c_uint32, c_uint32, POINTER(bpf_map_create_opts)]),
        "bpf_map__key_size": (c_uint32, [P]),
        "bpf_map__value_size": (c_uint32, [P]),
        "bpf_map__map_flags": (c_uint32, [P]),
        "bpf_map__fd": (c_int, [P]),
        "bpf_map__reuse_fd": (c_int, [P, c_int]),
        "bpf_map__type": (c_int, [P]),
        "bpf_map__set_autocreate": (c_int, [P, c_bool]),
        "bpf_program__name": (c_char_p, [P]),
        "bpf_program__section_name": (c_char_p, [P]),
        "bpf_program__fd": (c_int, [P]),
        "bpf_program__pin": (c_int, [P, c_char_p]),
        "bpf_program__set_autoload": (c_int, [P, c_bool]),
        "bpf_program__type": (c_int, [P]),
        "bpf_program__set_log_level": (c_int, [P, c_uint32]),
        "bpf_program__set_log_buf": (c_int, [P, c_char_p, c_size_t]),
        "bpf_obj_get": (c_int, [c_char_p]),
        "bpf_obj_pin": (c_int, [c_int, c_char_p]),
        "bpf_obj_get_info_by_fd": (c_int, [c_int, P, POINTER(c_uint32)]),
        "bpf_prog_get_fd_by_id": (c_int, [c_uint32]),
        "bpf_map_get_fd_by_id": (c_int, [c_uint32]),
        "bpf_btf_get_fd_by_id": (c_int, [c_uint32]),
        "bpf_map_lookup_elem": (c_int, [c_int, P, P]),
        "bpf_map_update_elem": (c_int, [c_int, P, P, c_uint64]),
        "bpf_map_delete_elem": (c_int, [c_int, P]),
        "bpf_map_get_next_key": (c_int, [c_int, P, P]),
        "bpf_map_update_batch": (c_int, [c_int, P, P, POINTER(c_uint32), POINTER(bpf_map_batch_opts)]),
        "bpf_map_lookup_batch": (c_int, [c_int, P, P, P, P, POINTER(c_uint32),
                                         POINTER(bpf_map_batch_opts)]),
        "bpf_map_delete_batch": (c_int, [c_int, P, POINTER(c_uint32), POINTER(bpf_map_batch_opts)]),
        "bpf_prog_test_run_opts": (c_int, [c_int, POINTER(bpf_test_run_opts)]),
        "libbpf_num_possible_cpus": (c_int, []),
        "bpf_enable_stats": (c_int, [c_int]),
        "bpf_link__pin": (c_int, [P, c_char_p]),
        "bpf_link__fd": (c_int, [P]),
        "bpf_link__destroy": (c_int, [P]),
        "bpf_link__disconnect": (None, [P]),
        "bpf_link_update": (c_int, [c_int, c_int, P]),
        "libbpf_get_error": (c_long, [P]),
    }
    for name, (res, args) in sig.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args


def lib():
    return _load_lib()


def take_log() -> list[str]:
    """libbpf's messages since the last call (verifier logs arrive here)."""
    out = list(_log_lines)
    _log_lines.clear()
    return out


def _check(rc: int, what: str) -> int:
    if rc < 0:
        err = -rc if rc != -1 else ctypes.get_errno()
        raise LibbpfError(what, err or errno_mod.EINVAL)
    return rc


def close_fd(fd: int) -> None:
    if fd >= 0:
        os.close(fd)


# ---------------------------------------------------------------- objects

@dataclass
class LoadedProgram:
    name: str
    section: str
    fd: int
    prog_type: str


class BpfObject:
    """An opened ELF object; a context manager that closes it."""

    def __init__(self, path: str):
        L = lib()
        take_log()
        # On a failed load libbpf retries with log level 1 into this buffer; the kernel
        # (6.4+) keeps the log's tail when it overflows, which is the part that matters.
        self._log_buf = create_string_buffer(VERIFIER_LOG_SIZE)
        opts = bpf_object_open_opts(sz=ctypes.sizeof(bpf_object_open_opts))
        opts.kernel_log_buf = ctypes.cast(self._log_buf, c_char_p)
        opts.kernel_log_size = VERIFIER_LOG_SIZE
        self.path = path
        self._inner_fds: list[int] = []
        self.ptr = L.bpf_object__open_file(path.encode(), byref(opts))
        if not self.ptr:
            err = ctypes.get_errno() or errno_mod.EINVAL
            raise LibbpfError(f"opening {path}", err, "\n".join(take_log()))
        self.loaded = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self.ptr:
            lib().bpf_object__close(self.ptr)
            self.ptr = None
        for fd in self._inner_fds:
            os.close(fd)
        self._inner_fds.clear()

    def maps(self) -> Iterator[tuple[str, int]]:
        L = lib()
        m = L.bpf_object__next_map(self.ptr, None)
        while m:
            yield L.bpf_map__name(m).decode(), m
            m = L.bpf_object__next_map(self.ptr, m)

    def user_maps(self) -> Iterator[tuple[str, int]]:
        L = lib()
        for name, m in self.maps():
            if not L.bpf_map__is_internal(m):
                yield name, m

    def programs(self) -> Iterator[tuple[str, int]]:
        L = lib()
        p = L.bpf_object__next_program(self.ptr, None)
        while p:
            yield L.bpf_program__name(p).decode(), p
            p = L.bpf_object__next_program(self.ptr, p)

    def program(self, name: str) -> int:
        p = lib().bpf_object__find_program_by_name(self.ptr, name.encode())
        if not p:
            raise LibbpfError(f"program {name} not in {self.path}", errno_mod.ENOENT)
        return p

    def set_map_pin_path(self, m: int, path: str) -> None:
        _check(lib().bpf_map__set_pin_path(m, path.encode()), f"setting pin path {path}")

    def set_inner_max_entries(self, m: int, n: int) -> None:
        """max_entries of a map-in-map's inner template (inner maps must match it).
        libbpf 1.1 crashes resizing its own inner template (the template has no
        object), so a template of the same definition is made here and handed over."""
        L = lib()
        inner = L.bpf_map__inner_map(m)
        if not inner:
            raise LibbpfError("map has no inner map template", errno_mod.EINVAL)
        fd = map_create(L.bpf_map__type(inner), "inner_tmpl", L.bpf_map__key_size(inner),
                        L.bpf_map__value_size(inner), n, L.bpf_map__map_flags(inner),
                        L.bpf_map__map_extra(inner))
        try:
            _check(L.bpf_map__set_inner_map_fd(m, fd), "setting the inner map template")
        finally:
            self._inner_fds.append(fd)

    def set_map_max_entries(self, m: int, n: int) -> None:
        _check(lib().bpf_map__set_max_entries(m, n), f"setting max_entries={n}")

    def map_def(self, m: int) -> dict:
        """The definition libbpf will create `m` with (after any set_max_entries)."""
        L = lib()
        return {"type_id": L.bpf_map__type(m), "key_size": L.bpf_map__key_size(m),
                "value_size": L.bpf_map__value_size(m), "max_entries": L.bpf_map__max_entries(m),
                "flags": L.bpf_map__map_flags(m)}

    def set_autoload(self, prog: int, on: bool) -> None:
        _check(lib().bpf_program__set_autoload(prog, on), "setting autoload")

    def set_autocreate(self, m: int, on: bool) -> None:
        _check(lib().bpf_map__set_autocreate(m, on), "setting autocreate")

    def load(self) -> None:
        L = lib()
        take_log()
        rc = L.bpf_object__load(self.ptr)
        if rc < 0:
            err = -rc
            log = "\n".join(take_log())
            verifier = self._log_buf.value.decode(errors="replace")
            if verifier:
                log = f"{log}\n-- BEGIN PROG LOAD LOG --\n{verifier}\n-- END PROG LOAD LOG --"
            raise LibbpfError(f"loading {os.path.basename(self.path)}", err, log)
        self.loaded = True

    def loaded_programs(self) -> list[LoadedProgram]:
        L = lib()
        out = []
        for name, p in self.programs():
            fd = L.bpf_program__fd(p)
            if fd < 0:
                continue
            out.append(LoadedProgram(name, (L.bpf_program__section_name(p) or b"").decode(), fd,
                                     PROG_TYPES.get(L.bpf_program__type(p), "unknown")))
        return out

    def pin_program(self, name: str, path: str) -> None:
        _check(lib().bpf_program__pin(self.program(name), path.encode()), f"pinning {name} at {path}")

    def map_fd(self, name: str) -> int:
        m = lib().bpf_object__find_map_by_name(self.ptr, name.encode())
        if not m:
            raise LibbpfError(f"map {name} not in {self.path}", errno_mod.ENOENT)
        return lib().bpf_map__fd(m)

    def prog_fd(self, name: str) -> int:
        return lib().bpf_program__fd(self.program(name))


# ---------------------------------------------------------------- fds and info

def obj_get(path: str) -> int:
    fd = lib().bpf_obj_get(path.encode())
    if fd < 0:
        raise LibbpfError(f"opening pin {path}", ctypes.get_errno() or errno_mod.ENOENT)
    return fd


def obj_pin(fd: int, path: str) -> None:
    if lib().bpf_obj_pin(fd, path.encode()) < 0:
        raise LibbpfError(f"pinning at {path}", ctypes.get_errno() or errno_mod.EINVAL)


def prog_info(fd: int) -> dict:
    info = bpf_prog_info()
    n = c_uint32(ctypes.sizeof(info))
    _check(lib().bpf_obj_get_info_by_fd(fd, byref(info), byref(n)), "reading program info")
    return {
        "id": info.id, "type": PROG_TYPES.get(info.type, str(info.type)),
        "name": info.name.decode(errors="replace"), "tag": bytes(info.tag).hex(),
        "xlated_len": info.xlated_prog_len, "jited_len": info.jited_prog_len,
        "verified_insns": info.verified_insns, "run_time_ns": info.run_time_ns,
        "run_cnt": info.run_cnt, "btf_id": info.btf_id, "load_time": info.load_time,
    }


def prog_map_ids(fd: int) -> list[int]:
    """IDs of the maps a loaded program uses."""
    info = bpf_prog_info()
    n = c_uint32(ctypes.sizeof(info))
    _check(lib().bpf_obj_get_info_by_fd(fd, byref(info), byref(n)), "reading program info")
    count = info.nr_map_ids
    if not count:
        return []
    ids = (c_uint32 * count)()
    info2 = bpf_prog_info()
    info2.nr_map_ids = count
    info2.map_ids = ctypes.addressof(ids)
    n = c_uint32(ctypes.sizeof(info2))
    _check(lib().bpf_obj_get_info_by_fd(fd, byref(info2), byref(n)), "reading program map ids")
    return list(ids[: min(count, info2.nr_map_ids)])


def prog_jited_ranges(fd: int) -> list[tuple[int, int]]:
    """[(start address, length)] of each JIT-compiled function of a program (the
    main program and its subprograms); empty when the JIT is off or addresses
    are hidden (kernel.kptr_restrict)."""
    info = bpf_prog_info()
    n = c_uint32(ctypes.sizeof(info))
    _check(lib().bpf_obj_get_info_by_fd(fd, byref(info), byref(n)), "reading program info")
    count = min(info.nr_jited_ksyms, info.nr_jited_func_lens)
    if not count:
        return []
    addrs = (c_uint64 * count)()
    lens = (c_uint32 * count)()
    info2 = bpf_prog_info()
    info2.nr_jited_ksyms = count
    info2.jited_ksyms = ctypes.addressof(addrs)
    info2.nr_jited_func_lens = count
    info2.jited_func_lens = ctypes.addressof(lens)
    n = c_uint32(ctypes.sizeof(info2))
    _check(lib().bpf_obj_get_info_by_fd(fd, byref(info2), byref(n)), "reading program JIT addresses")
    return [(addrs[i], lens[i]) for i in range(count) if addrs[i]]


def map_info(fd: int) -> dict:
    info = bpf_map_info()
    n = c_uint32(ctypes.sizeof(info))
    _check(lib().bpf_obj_get_info_by_fd(fd, byref(info), byref(n)), "reading map info")
    return {
        "id": info.id, "type": MAP_TYPES.get(info.type, str(info.type)), "type_id": info.type,
        "name": info.name.decode(errors="replace"), "key_size": info.key_size,
        "value_size": info.value_size, "max_entries": info.max_entries, "flags": info.map_flags,
        "btf_id": info.btf_id, "btf_key_type_id": info.btf_key_type_id,
        "btf_value_type_id": info.btf_value_type_id,
    }


def link_info(fd: int) -> dict:
    info = bpf_link_info_hdr()
    n = c_uint32(ctypes.sizeof(info))
    _check(lib().bpf_obj_get_info_by_fd(fd, byref(info), byref(n)), "reading link info")
    return {"id": info.id, "type": info.type, "prog_id": info.prog_id, "raw": bytes(info.union)}


MAP_HASH, MAP_LPM_TRIE, MAP_BLOOM_FILTER = 1, 11, 30
BPF_F_NO_PREALLOC = 1


def map_create(map_type: int, name: str, key_size: int, value_size: int, max_entries: int,
               flags: int = 0, extra: int = 0) -> int:
    """Create a map (not pinned): for inner maps of map-in-map sets."""
    opts = bpf_map_create_opts(sz=ctypes.sizeof(bpf_map_create_opts), map_flags=flags, map_extra=extra)
    fd = lib().bpf_map_create(map_type, name.encode()[:15], key_size, value_size, max_entries, byref(opts))
    if fd < 0:
        raise LibbpfError(f"creating map {name}", -fd if fd != -1 else ctypes.get_errno())
    return fd


def map_fd_by_id(map_id: int) -> int:
    fd = lib().bpf_map_get_fd_by_id(map_id)
    if fd < 0:
        raise LibbpfError(f"opening map id {map_id}", ctypes.get_errno() or errno_mod.ENOENT)
    return fd


def prog_fd_by_id(prog_id: int) -> int:
    fd = lib().bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        raise LibbpfError(f"opening program id {prog_id}", ctypes.get_errno() or errno_mod.ENOENT)
    return fd


def btf_raw_by_id(btf_id: int) -> bytes:
    """The raw BTF blob the kernel holds under btf_id (what a map or program was loaded with)."""
    fd = lib().bpf_btf_get_fd_by_id(btf_id)
    if fd < 0:
        raise LibbpfError(f"opening BTF id {btf_id}", ctypes.get_errno() or errno_mod.ENOENT)
    try:
        info = bpf_btf_info()
        n = c_uint32(ctypes.sizeof(info))
        _check(lib().bpf_obj_get_info_by_fd(fd, byref(info), byref(n)), "reading BTF info")
        size = info.btf_size
        buf = create_string_buffer(size)
        info2 = bpf_btf_info(btf=ctypes.addressof(buf), btf_size=size)
        n = c_uint32(ctypes.sizeof(info2))
        _check(lib().bpf_obj_get_info_by_fd(fd, byref(info2), byref(n)), "reading BTF")
        return buf.raw[:size]
    finally:
        os.close(fd)


def num_possible_cpus() -> int:
    n = lib().libbpf_num_possible_cpus()
    if n <= 0:
        raise LibbpfError("counting possible CPUs", -n or errno_mod.EINVAL)
    return n


BPF_STATS_RUN_TIME = 0


def enable_run_time_stats() -> int:
    """BPF_ENABLE_STATS: programs' run_cnt/run_time_ns count while the returned fd
    is open (like kernel.bpf_stats_enabled=1, without touching the sysctl, and
    undone by the kernel when the fd closes, even if we crash). ~20 ns per run."""
    fd = lib().bpf_enable_stats(BPF_STATS_RUN_TIME)
    if fd < 0:
        raise LibbpfError("enabling BPF run-time stats", -fd if fd != -1 else ctypes.get_errno())
    return fd


# ---------------------------------------------------------------- map access

def _round8(n: int) -> int:
    return (n + 7) & ~7


class MapHandle:
    """A map fd with its geometry; values of per-CPU maps come back as a list."""

    def __init__(self, fd: int, owned: bool = True):
        self.fd = fd
        self.owned = owned
        self.info = map_info(fd)
        self.key_size = self.info["key_size"]
        self.value_size = self.info["value_size"]
        self.percpu = self.info["type_id"] in PERCPU_MAP_TYPES
        self.ncpus = num_possible_cpus() if self.percpu else 1
        self.stride = _round8(self.value_size) if self.percpu else self.value_size

    @classmethod
    def pinned(cls, path: str) -> "MapHandle":
        return cls(obj_get(path))

    def close(self) -> None:
        if self.owned and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _vbuf(self):
        return create_string_buffer(self.stride * self.ncpus)

    def _split(self, raw: bytes):
        if not self.percpu:
            return raw[: self.value_size]
        return [raw[i * self.stride: i * self.stride + self.value_size] for i in range(self.ncpus)]

    def lookup(self, key: bytes):
        kb = create_string_buffer(key, self.key_size) if key else None
        vb = self._vbuf()
        if lib().bpf_map_lookup_elem(self.fd, kb, vb) < 0:
            err = ctypes.get_errno()
            if err == errno_mod.ENOENT:
                return None
            raise LibbpfError("map lookup", err)
        return self._split(vb.raw)

    def update(self, key: bytes, value, flags: int = BPF_ANY) -> None:
        kb = create_string_buffer(key, self.key_size) if key else None
        if self.percpu and isinstance(value, (list, tuple)):
            raw = b"".join(v.ljust(self.stride, b"\0") for v in value)
        elif self.percpu:
            raw = value.ljust(self.stride, b"\0") * self.ncpus
        else:
            raw = value
        vb = create_string_buffer(raw, max(len(raw), self.stride * self.ncpus))
        if lib().bpf_map_update_elem(self.fd, kb, vb, flags) < 0:
            raise LibbpfError("map update", ctypes.get_errno())

    def push(self, value: bytes) -> None:
        """Add a value to a bloom filter (or push onto a queue/stack)."""
        vb = create_string_buffer(value, self.value_size)
        if lib().bpf_map_update_elem(self.fd, None, vb, BPF_ANY) < 0:
            raise LibbpfError("map push", ctypes.get_errno())

    def delete(self, key: bytes) -> bool:
        kb = create_string_buffer(key, self.key_size)
        if lib().bpf_map_delete_elem(self.fd, kb) < 0:
            err = ctypes.get_errno()
            if err == errno_mod.ENOENT:
                return False
            raise LibbpfError("map delete", err)
        return True

    def keys(self, limit: int | None = None) -> Iterator[bytes]:
        L = lib()
        cur = None
        nxt = create_string_buffer(self.key_size)
        n = 0
        while True:
            if L.bpf_map_get_next_key(self.fd, cur, nxt) < 0:
                err = ctypes.get_errno()
                if err == errno_mod.ENOENT:
                    return
                raise LibbpfError("map iteration", err)
            k = nxt.raw
            yield k
            n += 1
            if limit is not None and n >= limit:
                return
            cur = create_string_buffer(k, self.key_size)

    def items(self, limit: int | None = None) -> Iterator[tuple[bytes, object]]:
        for k in self.keys(limit):
            v = self.lookup(k)
            if v is not None:
                yield k, v

    def count(self, limit: int | None = None) -> int:
        if self.info["type"] in ("array", "percpu_array"):
            return self.info["max_entries"]
        return sum(1 for _ in self.keys(limit))

    def update_batch(self, keys: bytes, values: bytes, count: int, flags: int = BPF_ANY) -> int:
        """Update `count` packed keys/values in one syscall; returns how many went in."""
        opts = bpf_map_batch_opts(sz=ctypes.sizeof(bpf_map_batch_opts), elem_flags=flags, flags=0)
        n = c_uint32(count)
        kb = ctypes.c_char_p(keys)
        vb = ctypes.c_char_p(values)
        rc = lib().bpf_map_update_batch(self.fd, ctypes.cast(kb, c_void_p), ctypes.cast(vb, c_void_p),
                                        byref(n), byref(opts))
        if rc < 0:
            raise LibbpfError(f"batch update ({n.value} of {count} done)", ctypes.get_errno())
        return n.value

    def delete_batch(self, keys: bytes, count: int) -> int:
        opts = bpf_map_batch_opts(sz=ctypes.sizeof(bpf_map_batch_opts))
        n = c_uint32(count)
        kb = ctypes.c_char_p(keys)
        rc = lib().bpf_map_delete_batch(self.fd, ctypes.cast(kb, c_void_p), byref(n), byref(opts))
        if rc < 0 and ctypes.get_errno() != errno_mod.ENOENT:
            raise LibbpfError(f"batch delete ({n.value} of {count} done)", ctypes.get_errno())
        return n.value


# ---------------------------------------------------------------- test run

@dataclass
class TestRun:
    retval: int
    data_out: bytes
    duration_ns: int


def prog_test_run(prog_fd: int, data: bytes, repeat: int = 1, out_size: int | None = None,
                  ctx_in: bytes | None = None) -> TestRun:
    """BPF_PROG_TEST_RUN: run the program once (or `repeat` times) on `data`."""
    out_size = out_size or max(len(data) + 4096, 256)
    din = create_string_buffer(data, len(data))
    dout = create_string_buffer(out_size)
    opts = bpf_test_run_opts(sz=ctypes.sizeof(bpf_test_run_opts))
    opts.data_in = ctypes.cast(din, c_void_p)
    opts.data_size_in = len(data)
    opts.data_out = ctypes.cast(dout, c_void_p)
    opts.data_size_out = out_size
    opts.repeat = repeat
    if ctx_in is not None:
        cin = create_string_buffer(ctx_in, len(ctx_in))
        opts.ctx_in = ctypes.cast(cin, c_void_p)
        opts.ctx_size_in = len(ctx_in)
    rc = lib().bpf_prog_test_run_opts(prog_fd, byref(opts))
    if rc < 0:
        raise LibbpfError("BPF_PROG_TEST_RUN", -rc if rc != -1 else ctypes.get_errno())
    return TestRun(opts.retval, dout.raw[: opts.data_size_out], opts.duration)
