"""The one place nexusctl runs external commands (through `sh`) and libbpf.

Every command is an argument list, never a shell string (a string is refused),
and its first element must be one of the tools in PACKAGES, looked up on PATH:
nothing nexusctl runs comes from a config file or the command line (see
docs/security.md). With -v each command is logged to stderr before it runs.
A missing tool exits 3 naming the package. bpftool is always run with -j and
its output checked for {"error": ...}.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import sh

from nexusctl.errors import NexusError, OperationFailed, Unsupported, UsageError

# tool → Debian package that provides it
PACKAGES = {
    "clang": "clang", "llvm-strip": "llvm", "bpftool": "bpftool", "ip": "iproute2", "tc": "iproute2",
    "unbound": "unbound", "unbound-checkconf": "unbound", "dig": "dnsutils", "dnsperf": "dnsperf",
    "nsenter": "util-linux", "mount": "mount", "umount": "mount", "openssl": "openssl", "sysctl": "procps",
}
NETNS_DIR = Path("/run/netns")
NETNS_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")     # as the config model checks it


@dataclass
class CmdResult:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    duration: float = 0.0

    def json(self):
        try:
            return json.loads(self.stdout) if self.stdout.strip() else None
        except json.JSONDecodeError as e:
            raise OperationFailed(f"{self.argv[0]} printed output that is not JSON: {e}",
                                  details=self.stdout[-2000:]) from None


class CommandFailed(OperationFailed):
    def __init__(self, res: CmdResult, message: str | None = None):
        err = (res.stderr or res.stdout).strip().splitlines()
        last = err[-1] if err else f"exit code {res.rc}"
        super().__init__(message or f"`{' '.join(res.argv[:4])}…` failed: {last}",
                         details="\n".join(err[-30:]))
        self.result = res


def _own_programs() -> tuple[str, ...]:
    """The Python running nexusctl and the nexusctl script beside it."""
    return (sys.executable, str(Path(sys.executable).with_name("nexusctl")))


def netns_path(netns: str) -> Path:
    if not NETNS_NAME.fullmatch(netns) or netns in (".", ".."):
        raise UsageError(f"{netns!r} is not a network namespace name")
    return NETNS_DIR / netns


@dataclass
class Runner:
    verbose: bool = False
    log: Callable[[str], None] = field(default=lambda s: None)
    history: list[list[str]] = field(default_factory=list)
    _tools: dict = field(default_factory=dict)

    # ---------------------------------------------------------------- subprocesses
    def which(self, tool: str) -> str:
        if tool in self._tools:
            return self._tools[tool]
        path = shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
        if not path:
            pkg = PACKAGES.get(tool, tool)
            raise Unsupported(f"{tool} is not installed on this host",
                              f"install it with `apt-get install {pkg}` (or run `make setup`)")
        self._tools[tool] = path
        return path

    def has(self, tool: str) -> bool:
        try:
            self.which(tool)
            return True
        except Unsupported:
            return False

    def run(self, argv: Sequence[str], *, netns: str | None = None, check: bool = True,
            timeout: float | None = None, input: str | bytes | None = None, env: dict | None = None,
            quiet: bool = False) -> CmdResult:
        if isinstance(argv, (str, bytes)) or not argv:
            raise TypeError("Runner.run takes a non-empty argument list, never a shell string")
        argv = [str(a) for a in argv]
        if argv[0] not in PACKAGES and argv[0] not in _own_programs():
            # a fixed set of tools, found on PATH (and nexusctl's own interpreter and entry
            # point, which bench runs): never a path or a name from input
            raise OperationFailed(f"refusing to run {argv[0]!r}: not one of the tools nexusctl uses",
                                  "a bug in nexusctl: add the tool to PACKAGES in nexusctl/tools/runner.py")
        tool = self.which(argv[0])
        full = [tool, *argv[1:]]
        if netns:
            if not netns_path(netns).exists():
                raise OperationFailed(f"network namespace {netns} does not exist",
                                      f"create it (`ip netns add {netns}`) or fix the interface's netns")
            # nsenter switches only the network namespace: /sys/fs/bpf pins stay visible
            # (`ip netns exec` would mount a fresh sysfs without them).
            full = [self.which("nsenter"), f"--net={netns_path(netns)}", *full]
        shown = " ".join(([f"[netns {netns}]"] if netns else []) + argv)
        if self.verbose and not quiet:
            self.log(f"$ {shown}")
        self.history.append(argv if not netns else ["@" + netns, *argv])
        cmd = sh.Command(full[0]).bake(_tty_out=False)
        # sh polls every 100 ms while a _timeout is armed: only arm it where a command can hang.
        # In the background and waited for here, so an interrupted nexusctl (Ctrl-C, or
        # SIGTERM turned into KeyboardInterrupt) stops the command instead of leaving it running.
        kwargs = dict(_ok_code=list(range(256)), _return_cmd=True, _bg=True, _bg_exc=False)
        if timeout:
            kwargs["_timeout"] = timeout
        if input is not None:
            kwargs["_in"] = input
        if env is not None:
            kwargs["_env"] = {**os.environ, **env}
        t0 = time.monotonic()
        try:
            proc = cmd(*full[1:], **kwargs)
            try:
                proc.wait()
            except BaseException as e:
                if not isinstance(e, (sh.ErrorReturnCode, sh.TimeoutException)):
                    _stop(proc)
                raise
            res = CmdResult(argv, proc.exit_code, _text(proc.stdout), _text(proc.stderr),
                            time.monotonic() - t0)
        except sh.TimeoutException:
            raise OperationFailed(f"`{shown}` did not finish within {timeout:.0f}s") from None
        except sh.ErrorReturnCode as e:   # signals (SignalException) land here
            res = CmdResult(argv, getattr(e, "exit_code", -1), _text(e.stdout), _text(e.stderr),
                            time.monotonic() - t0)
        if check and res.rc != 0:
            raise CommandFailed(res)
        return res

    # ---------------------------------------------------------------- tools
    def bpftool(self, *args: str, netns: str | None = None, check: bool = True):
        """Run `bpftool -j ARGS`; return parsed JSON; fail on exit code or {"error": ...}."""
        res = self.run(["bpftool", "-j", *args], netns=netns, check=False)
        data = None
        if res.stdout.strip():
            try:
                data = json.loads(res.stdout)
            except json.JSONDecodeError:
                data = None
        if isinstance(data, dict) and "error" in data:
            if check:
                raise CommandFailed(res, f"bpftool {' '.join(args[:3])} failed: {data['error']}")
            return data
        if check and res.rc != 0:
            raise CommandFailed(res)
        return data

    def ip_json(self, *args: str, netns: str | None = None, check: bool = True):
        res = self.run(["ip", "-j", *args], netns=netns, check=check)
        return res.json() if res.rc == 0 else None

    def tc_json(self, *args: str, netns: str | None = None, check: bool = True):
        res = self.run(["tc", "-j", *args], netns=netns, check=check)
        return res.json() if res.rc == 0 else None

    # ---------------------------------------------------------------- libbpf
    @property
    def libbpf(self):
        """The libbpf bindings (nexusctl.tools.libbpf); loading them can raise Unsupported."""
        from nexusctl.tools import libbpf
        try:
            libbpf.lib()
        except OSError as e:
            raise Unsupported(f"libbpf is not usable: {e}", "apt-get install libbpf1") from None
        return libbpf

    def kernel_action(self, text: str) -> None:
        """Log an in-process kernel action (libbpf call) the way commands are logged."""
        if self.verbose:
            self.log(f"# {text}")
        self.history.append(["#", text])


def _stop(proc, grace: float = 2.0) -> None:
    """SIGTERM a command we stopped waiting for, SIGKILL if it lingers."""
    try:
        proc.terminate()
        proc.wait(timeout=grace)
    except sh.TimeoutException:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
    except Exception:  # noqa: BLE001 - it exited meanwhile (any exit status): nothing left to stop
        pass


def _text(b) -> str:
    if b is None:
        return ""
    if isinstance(b, bytes):
        return b.decode(errors="replace")
    return str(b)


def reraise_libbpf(e: OSError, what: str, hint: str | None = None) -> NexusError:
    """Turn a LibbpfError into a one-sentence NexusError with the log tail as details."""
    log = getattr(e, "log", "") or ""
    tail = "\n".join(log.strip().splitlines()[-40:]) if log else None
    import errno as _errno
    if e.errno in (_errno.EPERM, _errno.EACCES) and os.geteuid() != 0:
        return Unsupported(f"{what}: permission denied", "run nexusctl as root (BPF needs CAP_BPF and CAP_NET_ADMIN)",
                           details=tail)
    msg = f"{what}: {os.strerror(e.errno) if e.errno else e}"
    if log and "BEGIN PROG LOAD LOG" in log:
        msg = f"{what}: the kernel verifier refused a program"
        hint = hint or "run with -v to see the verifier log tail"
    return OperationFailed(msg, hint, details=tail)
