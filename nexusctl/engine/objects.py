"""Which BPF objects exist, when the config needs them, how big their maps
are, and what goes into the config map. One place to extend per feature."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from nexusctl.config.model import Config


@dataclass(frozen=True)
class ObjectSpec:
    name: str                           # bpf/<name>.c → <build>/<name>.o
    programs: tuple[str, ...]           # programs the object holds, pinned as progs/<prog>
    needed: Callable[[Config], bool]    # does this config load it?
    description: str


OBJECTS: list[ObjectSpec] = [
    ObjectSpec("nexus_dns_xdp", ("nexus_dns_xdp",),
               lambda c: any(i.xdp for i in c.interfaces), "DNS fast path (XDP ingress)"),
    ObjectSpec("nexus_dns_tc", ("nexus_dns_tc",),
               lambda c: any(i.tc_egress for i in c.interfaces), "DNS answers and policy (TC egress)"),
    ObjectSpec("nexus_xdp_pass", ("nexus_xdp_pass",),
               lambda c: any(i.veth_peer for i in c.interfaces), "XDP_PASS for veth peers (XDP_TX needs it)"),
]

OBJECTS_BY_NAME = {o.name: o for o in OBJECTS}
PROGRAM_OBJECT = {p: o.name for o in OBJECTS for p in o.programs}


def needed_objects(cfg: Config) -> list[ObjectSpec]:
    return [o for o in OBJECTS if o.needed(cfg)]


def map_sizes(cfg: Config) -> dict[str, int]:
    """max_entries per map name, from the config; maps not named keep the object's size."""
    return {}


def config_values(cfg: Config) -> dict:
    """Field values of struct nexus_config (bpf/include/nexus_structs.h) for this config."""
    d = cfg.dns
    return {
        "dns_ports": list(d.ports),
        "malformed_action": 1 if d.malformed == "pass" else 0,
    }


def links(cfg: Config) -> list:
    """LinkSpecs (nexusctl.engine.links) for tracepoint/uprobe/perf_event/cgroup programs."""
    return []


def pin_dirs(pin_root: Path) -> dict[str, Path]:
    return {"progs": pin_root / "progs", "maps": pin_root / "maps", "links": pin_root / "links"}
