"""BPF ring buffers through libbpf (ring_buffer__new/poll/consume/free), via ctypes,
and libbpf's program-type probe (libbpf_probe_bpf_prog_type).

Kept in its own module (not nexusctl.tools.libbpf) so features that consume
ring buffers do not edit the shared bindings; the names are libbpf's own.
A sample callback gets the record's bytes; decoding (BTF layouts) is the
caller's business.
"""
from __future__ import annotations

import ctypes
import errno as errno_mod
from ctypes import CFUNCTYPE, c_int, c_size_t, c_void_p
from typing import Callable

from nexusctl.tools import libbpf

_SAMPLE_FN = CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)
_own = None


def _lib():
    """Our own CDLL handle on the already loaded libbpf (same library, loaded once): ctypes
    keeps argtypes per handle, so other modules declaring these functions with their own
    callback types cannot clash with ours."""
    global _own
    if _own is None:
        L = ctypes.CDLL(libbpf.lib()._name, use_errno=True)
        for name, res, args in (
            ("ring_buffer__new", c_void_p, [c_int, _SAMPLE_FN, c_void_p, c_void_p]),
            ("ring_buffer__poll", c_int, [c_void_p, c_int]),
            ("ring_buffer__consume", c_int, [c_void_p]),
            ("ring_buffer__free", None, [c_void_p]),
            ("libbpf_probe_bpf_prog_type", c_int, [c_int, c_void_p]),
        ):
            fn = getattr(L, name)
            fn.restype = res
            fn.argtypes = args
        _own = L
    return _own


class RingBuffer:
    """Consume records of one ring buffer map; on_sample(bytes) is called for each,
    and may return True to stop (the records after it stay in the buffer).

    with RingBuffer(map_fd, handler) as rb:
        rb.poll(100)        # wait up to 100 ms, handle what is there
        rb.consume()        # handle what is there, do not wait
    """

    def __init__(self, map_fd: int, on_sample: Callable[[bytes], bool | None]):
        L = _lib()
        self._error: BaseException | None = None
        self._stopped = False

        def _cb(_ctx, data, size):
            try:
                if on_sample(ctypes.string_at(data, size)):
                    self._stopped = True
                    return -errno_mod.ECANCELED     # libbpf stops after this record
            except BaseException as e:  # noqa: BLE001 - never unwind through C; re-raised after the poll
                self._error = e
                return -errno_mod.ECANCELED
            return 0

        self._cb = _SAMPLE_FN(_cb)      # keep a reference while libbpf holds the pointer
        self.ptr = L.ring_buffer__new(map_fd, self._cb, None, None)
        if not self.ptr:
            raise libbpf.LibbpfError("ring_buffer__new", ctypes.get_errno() or errno_mod.EINVAL)

    def _check(self, rc: int, what: str) -> int:
        if self._error is not None:
            err, self._error = self._error, None
            raise err
        if self._stopped:
            self._stopped = False
            return 1
        if rc < 0 and -rc != errno_mod.EINTR:
            raise libbpf.LibbpfError(what, -rc)
        return max(rc, 0)

    def poll(self, timeout_ms: int) -> int:
        """Records handled (waits up to timeout_ms for the first)."""
        return self._check(_lib().ring_buffer__poll(self.ptr, timeout_ms), "ring_buffer__poll")

    def consume(self) -> int:
        return self._check(_lib().ring_buffer__consume(self.ptr), "ring_buffer__consume")

    def close(self) -> None:
        if self.ptr:
            _lib().ring_buffer__free(self.ptr)
            self.ptr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def probe_prog_type(prog_type: int) -> bool:
    """libbpf's own probe: does the kernel load a trivial program of this type?"""
    rc = _lib().libbpf_probe_bpf_prog_type(prog_type, None)
    if rc < 0:
        raise libbpf.LibbpfError(f"probing program type {prog_type}", -rc)
    return rc == 1

