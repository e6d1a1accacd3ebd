"""Types shared by feature modules."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class ObjectSpec:
    name: str                           # bpf/<name>.c → <build>/<name>.o
    programs: tuple[str, ...]           # programs the object holds, pinned as progs/<prog>
    needed: Callable                    # needed(cfg) -> bool: does this config load it?
    description: str


@dataclass
class ConfigWrite:
    """Write `values` (packed with the BTF of `struct_name` from object `source`) into
    entry `key` of the pinned map `map_name`."""
    map_name: str
    struct_name: str
    source: str                         # object whose BTF describes the struct
    values: dict = field(default_factory=dict)
    key: int = 0
