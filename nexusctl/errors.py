"""Exit codes and the exceptions that carry them.

Every expected failure is a NexusError: one sentence saying what happened and,
in `hint`, how to fix it. The CLI turns them into an exit code in one place
(nexusctl.cli.app); anything else is a bug and suggests `-v`.
"""
from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1          # the operation failed; the message says what state is left
    USAGE = 2           # bad usage or bad config (file:line and the field)
    UNSUPPORTED = 3     # the kernel or host lacks a needed feature
    LOCKED = 4          # another nexusctl holds the lock


class NexusError(Exception):
    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, hint: str | None = None, *, details: str | None = None,
                 exit_code: ExitCode | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details          # shown with -v (verifier log tail, stderr)
        if exit_code is not None:
            self.exit_code = exit_code

    def to_json(self) -> dict:
        out = {"error": self.message, "exit_code": int(self.exit_code)}
        if self.hint:
            out["hint"] = self.hint
        return out


class OperationFailed(NexusError):
    exit_code = ExitCode.FAILED


class UsageError(NexusError):
    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """A config problem; message starts with file:line."""


class Unsupported(NexusError):
    exit_code = ExitCode.UNSUPPORTED


class Locked(NexusError):
    exit_code = ExitCode.LOCKED
