"""The certificate observer: nexus_cert.o, uprobes on OpenSSL 3 found at run time.

Libraries are found when the plan is made: cert.libraries (paths or globs),
or libssl.so.3 and libcrypto.so.3 in the usual library directories. The same
file reached by two paths (/lib → /usr/lib) is probed once: uprobes belong to
the inode, so a second probe would fire twice. Every library is probed for
the symbols it defines, so a binary with OpenSSL linked in statically (and
its symbols kept) can be named too.
"""
from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from nexusctl.engine.actions import Action, Ctx
from nexusctl.errors import Unsupported
from nexusctl.features.base import ConfigWrite, ObjectSpec

if TYPE_CHECKING:
    from nexusctl.engine.links import LinkSpec

OBJECT = "nexus_cert"
PROGRAMS = ("cert_tls_enter", "cert_tls_exit", "cert_vfy_enter", "cert_vfy_exit", "cert_sni_set", "cert_ssl_free",
            "cert_d2i")
OBJECTS = [ObjectSpec(OBJECT, PROGRAMS, lambda c: c.cert.enabled, "certificate observer (uprobes on OpenSSL 3)")]
MAP_KEY_ENUMS = {"cert_counters": "nexus_cert_counter"}

# SSL_* calls inside which a handshake can run (implicitly in read/peek/write):
# entry marks the thread, return unmarks it.
HANDSHAKE_CALLS = ("SSL_do_handshake", "SSL_connect", "SSL_accept")
IO_CALLS = ("SSL_read", "SSL_read_ex", "SSL_peek", "SSL_peek_ex", "SSL_write", "SSL_write_ex")   # cert.probe_io
TLS_CALLS = HANDSHAKE_CALLS + IO_CALLS
# (symbol, program, return probe)
PROBES = ([(s, "cert_tls_enter", False) for s in TLS_CALLS] + [(s, "cert_tls_exit", True) for s in TLS_CALLS]
          + [("SSL_ctrl", "cert_sni_set", False), ("SSL_free", "cert_ssl_free", False),
             ("X509_verify_cert", "cert_vfy_enter", False), ("X509_verify_cert", "cert_vfy_exit", True),
             ("d2i_X509", "cert_d2i", False)])
REQUIRED = ("d2i_X509", "SSL_do_handshake")   # without both nothing can be observed
LIB_NAMES = ("libssl.so.3", "libcrypto.so.3")


def search_dirs() -> list[str]:
    arch = os.uname().machine
    multiarch = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}.get(arch, f"{arch}-linux-gnu")
    return [f"/lib/{multiarch}", f"/usr/lib/{multiarch}", "/lib64", "/usr/lib64", "/lib", "/usr/lib",
            "/usr/local/lib", "/usr/local/lib64", f"/usr/local/lib/{multiarch}"]


@dataclass(frozen=True)
class Library:
    path: str                           # as named (first path found for the inode)
    realpath: str
    symbols: tuple[str, ...]            # the probed symbols it defines

    @property
    def tag(self) -> str:
        return hashlib.sha1(self.realpath.encode()).hexdigest()[:8]


def candidates(cfg) -> list[str]:
    if cfg.cert.libraries:
        out = []
        for pattern in cfg.cert.libraries:
            out += sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        return out
    return [os.path.join(d, n) for d in search_dirs() for n in LIB_NAMES]


def discover(cfg) -> tuple[list[Library], list[str]]:
    """(libraries to probe, notes about the candidates that were skipped)."""
    from nexusctl.tools import perf
    wanted = {p[0] for p in PROBES}
    libs, notes, seen = [], [], set()
    for path in candidates(cfg):
        try:
            st = os.stat(path)
        except OSError:
            if cfg.cert.libraries:
                notes.append(f"{path}: does not exist")
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        try:
            syms = perf.elf_function_offsets(path)
        except (OSError, ValueError, IndexError) as e:
            notes.append(f"{path}: not a readable ELF object ({e})")
            continue
        have = tuple(s for s in sorted(wanted) if s in syms)
        if not have:
            notes.append(f"{path}: defines none of the OpenSSL functions probed")
            continue
        libs.append(Library(path, os.path.realpath(path), have))
    return libs, notes


def link_specs(libs: list[Library], probe_io: bool = True) -> list[LinkSpec]:
    from nexusctl.engine.links import LinkSpec       # engine.links imports the feature registry
    out = []
    for lib in libs:
        for symbol, prog, ret in PROBES:
            if symbol not in lib.symbols or (not probe_io and symbol in IO_CALLS):
                continue
            name = f"cert_{symbol}{'_ret' if ret else ''}_{lib.tag}"
            target = f"{lib.path}:{symbol}" + (" (return)" if ret else "")
            out.append(LinkSpec(name, prog, "uprobe", target, uprobe=(lib.path, symbol, ret)))
    return out


def links(cfg) -> list[LinkSpec]:
    if not cfg.cert.enabled:
        return []
    libs, notes = discover(cfg)
    have = {s for lib in libs for s in lib.symbols}
    missing = [s for s in REQUIRED if s not in have]
    if missing:
        where = ", ".join(cfg.cert.libraries) if cfg.cert.libraries else " ".join(search_dirs())
        raise Unsupported(f"the certificate observer found no OpenSSL 3 library defining {', '.join(missing)} "
                          f"(looked in {where})" + (f"; {'; '.join(notes)}" if notes else ""),
                          "install libssl3, or list the libraries in cert.libraries")
    return link_specs(libs, cfg.cert.probe_io)


def map_sizes(cfg) -> dict[str, int]:
    c = cfg.cert
    if not c.enabled:
        return {}
    return {"cert_events": c.ring_buffer_kib * 1024, "cert_threads": c.max_threads, "cert_sni": c.max_threads,
            "cert_recent": c.max_threads, "cert_verdicts": c.max_verdicts, "cert_threat_cache": c.max_verdicts,
            "ct_log_entries": c.max_verdicts}


def config_values(cfg) -> dict:
    """Field values of struct nexus_cert_config (bpf/include/nexus_cert.h)."""
    return {"max_der": cfg.cert.max_der, "enforce": 1 if cfg.ct.enforce == "kill" else 0,
            "dedup_window_ns": cfg.cert.dedup_window * 1_000_000_000}


def config_writes(cfg) -> list[ConfigWrite]:
    if not cfg.cert.enabled:
        return []
    return [ConfigWrite("cert_config", "nexus_cert_config", OBJECT, config_values(cfg))]


class EnsureCertSecret(Action):
    """Put a random key into cert_secret once: the in-kernel hash of certificates
    is keyed with it, so a server cannot pick DER bytes that collide with another
    certificate's key. Kept across reloads (the pinned map is reused)."""
    kind = "config-map"

    def __init__(self, pin_root: Path, obj_path: Path):
        from nexusctl.engine.objects import pin_dirs
        self.pin = pin_dirs(pin_root)["maps"] / "cert_secret"
        self.obj_path = obj_path

    def describe(self) -> str:
        return f"write a random key into {self.pin.name} (once)"

    def satisfied(self, ctx: Ctx) -> bool:
        if not self.pin.exists():
            return False
        with ctx.runner.libbpf.MapHandle.pinned(str(self.pin)) as m:
            cur = m.lookup(b"\0" * 4)
        if cur and any(cur):
            return True
        self.reason = "cert_secret holds no key yet"
        return False

    def apply(self, ctx: Ctx) -> None:
        from nexusctl.tools.btf import Btf
        ctx.runner.kernel_action(f"bpf_map_update_elem {self.pin} (random key)")
        layout = Btf.from_elf(self.obj_path).struct("nexus_cert_secret")
        value = layout.pack({"k0": int.from_bytes(os.urandom(8), "little"),
                             "k1": int.from_bytes(os.urandom(8), "little")})
        with ctx.runner.libbpf.MapHandle.pinned(str(self.pin)) as m:
            m.update(b"\0" * 4, value)


def extra_actions(cfg, state) -> list[Action]:
    if not cfg.cert.enabled:
        return []
    from nexusctl.engine.build import object_path
    return [EnsureCertSecret(cfg.pin_root, object_path(cfg.build_dir, OBJECT))]


def doctor_checks(app) -> list[dict]:
    from nexusctl.ops.doctor import check
    cfg = app.config
    libs, notes = discover(cfg)
    have = {s for lib in libs for s in lib.symbols}
    missing = [s for s in REQUIRED if s not in have]
    out = [check("OpenSSL 3 libraries", not missing,
                 ", ".join(lib.path for lib in libs) if libs else "none found",
                 "install libssl3 or set cert.libraries", required=cfg.cert.enabled, group="cert")]
    for n in notes:
        out.append(check("library skipped", False, n, "check cert.libraries", required=False, group="cert"))
    from nexusctl.ops import cert as cert_ops
    try:
        a = cert_ops.make_analyzer(cfg)
        out.append(check("trust store", not a.trust.missing, f"{len(a.trust)} CAs from {cfg.cert.trust_store}",
                         "set cert.trust_store to a PEM bundle", required=False, group="cert"))
        if cfg.ct.log_list:
            out.append(check("CT log list", True, f"{len(a.logs.logs)} logs, {len(a.logs.operators)} operators",
                             group="cert", required=False))
        else:
            out.append(check("CT log list", False, "ct.log_list is not set (SCTs are not verified)",
                             "set ct.log_list to a Chrome v3 log list", required=False, group="cert"))
    except Exception as e:              # noqa: BLE001 - report, do not fail doctor
        out.append(check("cert files", False, str(e), "fix the file named", required=cfg.cert.enabled,
                         group="cert"))
    return out
