"""What nexusctl created on this host: the state file and the lock.

The state lives in state_dir (tmpfs /run/nexus by default, like bpffs: both
vanish at reboot together). It is written atomically after every applied
action, so an interrupted run leaves a state that the next `up` or `down`
can converge from.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from nexusctl.errors import Locked, OperationFailed
from nexusctl.fsutil import atomic_write

STATE_VERSION = 1


@dataclass
class State:
    path: Path
    data: dict = field(default_factory=dict)

    @classmethod
    def load(cls, state_dir: Path) -> "State":
        path = Path(state_dir) / "state.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            data = {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            # A torn or corrupted state file: keep it for inspection, start fresh.
            bad = path.with_suffix(".corrupt")
            os.replace(path, bad)
            data = {"warnings": [f"state file was corrupt; moved to {bad}"]}
        except PermissionError:
            raise OperationFailed(f"{path} is not readable", "run nexusctl as root") from None
        data.setdefault("version", STATE_VERSION)
        data.setdefault("objects", {})
        data.setdefault("attachments", {})
        data.setdefault("links", {})
        return cls(path, data)

    @property
    def exists(self) -> bool:
        return self.path.exists()

    @property
    def objects(self) -> dict:
        return self.data["objects"]

    @property
    def attachments(self) -> dict:
        return self.data["attachments"]

    @property
    def links(self) -> dict:
        return self.data["links"]

    def save(self) -> None:
        atomic_write(self.path, json.dumps(self.data, indent=1, sort_keys=True).encode())

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class Lock:
    """An flock on state_dir/lock; a second nexusctl gets exit 4 at once."""

    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / "lock"
        self.fd: int | None = None

    def acquire(self) -> "Lock":
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = ""
            try:
                holder = os.read(fd, 64).decode().strip()
            except OSError:
                pass
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise Locked(f"another nexusctl is running (lock {self.path}"
                             f"{', held by pid ' + holder if holder else ''})",
                             "wait for it to finish, then run the command again") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
