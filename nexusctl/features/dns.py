"""The DNS fast path (XDP ingress) and its TC egress half."""
from __future__ import annotations

from nexusctl.features.base import ConfigWrite, ObjectSpec

OBJECTS = [
    ObjectSpec("nexus_dns_xdp", ("nexus_dns_xdp",),
               lambda c: any(i.xdp for i in c.interfaces), "DNS fast path (XDP ingress)"),
    ObjectSpec("nexus_dns_tc", ("nexus_dns_tc",),
               lambda c: any(i.tc_egress for i in c.interfaces), "DNS answers and policy (TC egress)"),
    ObjectSpec("nexus_xdp_pass", ("nexus_xdp_pass",),
               lambda c: any(i.veth_peer for i in c.interfaces), "XDP_PASS for veth peers (XDP_TX needs it)"),
]


def map_sizes(cfg) -> dict[str, int]:
    return {}


def config_values(cfg) -> dict:
    """Field values of struct nexus_config (bpf/include/nexus_structs.h) for this config."""
    d = cfg.dns
    return {
        "dns_ports": list(d.ports),
        "malformed_action": 1 if d.malformed == "pass" else 0,
    }


def config_writes(cfg) -> list[ConfigWrite]:
    loaded = [o.name for o in OBJECTS[:2] if o.needed(cfg)]
    if not loaded:
        return []
    return [ConfigWrite("nexus_config", "nexus_config", loaded[0], config_values(cfg))]
