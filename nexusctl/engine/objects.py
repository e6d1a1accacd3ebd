"""What the features (nexusctl.features) need, gathered for the planner:
objects to load, map sizes, config map writes, links, extra steps."""
from __future__ import annotations

from pathlib import Path

from nexusctl.config.model import Config
from nexusctl.features import FEATURES, ConfigWrite, ObjectSpec

OBJECTS: list[ObjectSpec] = [o for f in FEATURES for o in getattr(f, "OBJECTS", [])]
OBJECTS_BY_NAME = {o.name: o for o in OBJECTS}
PROGRAM_OBJECT = {p: o.name for o in OBJECTS for p in o.programs}


def needed_objects(cfg: Config) -> list[ObjectSpec]:
    return [o for o in OBJECTS if o.needed(cfg)]


def map_sizes(cfg: Config) -> dict[str, int]:
    """max_entries per map name; maps not named keep the size in their C definition."""
    out: dict[str, int] = {}
    for f in FEATURES:
        if hasattr(f, "map_sizes"):
            out.update(f.map_sizes(cfg))
    return out


def config_writes(cfg: Config) -> list[ConfigWrite]:
    return [w for f in FEATURES if hasattr(f, "config_writes") for w in f.config_writes(cfg)]


def config_values(cfg: Config) -> dict:
    """struct nexus_config's values (kept for callers that want just the DNS config)."""
    from nexusctl.features import dns
    return dns.config_values(cfg)


def links(cfg: Config) -> list:
    return [spec for f in FEATURES if hasattr(f, "links") for spec in f.links(cfg)]


def extra_actions(cfg: Config, state) -> list:
    return [a for f in FEATURES if hasattr(f, "extra_actions") for a in f.extra_actions(cfg, state)]


def pin_dirs(pin_root: Path) -> dict[str, Path]:
    return {"progs": pin_root / "progs", "maps": pin_root / "maps", "links": pin_root / "links"}
