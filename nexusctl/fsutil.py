"""Small file helpers shared by the state file and the policy store."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes, dir_mode: int = 0o700) -> None:
    """Write data to path so that a reader sees the old file or the new one, never half
    (temp file in the same directory, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_input(path: Path, error: type[Exception], context: str = "") -> bytes:
    """A file the user named, as bytes; a missing, unreadable or directory path
    becomes one clear `error` naming it (and `context`, e.g. the config key)."""
    p = Path(path)
    suffix = f" ({context})" if context else ""
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise error(f"{p}: no such file{suffix}") from None
    except IsADirectoryError:
        raise error(f"{p}: is a directory{suffix}") from None
    except PermissionError:
        raise error(f"{p}: permission denied{suffix}") from None
