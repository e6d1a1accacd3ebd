"""The DNS fast path (XDP ingress) and its TC egress half: objects, map sizes,
and the settings written into nexus_config and nexus_dga at `up`."""
from __future__ import annotations

from nexusctl import dga
from nexusctl.features.base import ConfigWrite, ObjectSpec

NS_PER_SEC = 1_000_000_000

OBJECTS = [
    ObjectSpec("nexus_dns_xdp", ("nexus_dns_xdp", "nexus_bloom_fill"),
               lambda c: any(i.xdp for i in c.interfaces), "DNS fast path (XDP ingress)"),
    ObjectSpec("nexus_dns_tc", ("nexus_dns_tc",),
               lambda c: any(i.tc_egress for i in c.interfaces), "DNS answers and policy (TC egress)"),
    ObjectSpec("nexus_xdp_pass", ("nexus_xdp_pass",),
               lambda c: any(i.veth_peer for i in c.interfaces), "XDP_PASS for veth peers (XDP_TX needs it)"),
]

DGA_MODES = {"off": 0, "count": 1, "block": 2}
BLOCK_RESPONSES = {"nxdomain": 0, "refused": 1, "drop": 2}


def map_sizes(cfg) -> dict[str, int]:
    d = cfg.dns
    return {"nexus_cache": d.cache.max_entries, "nexus_ratelimit": d.rate_limit.max_clients,
            "nexus_inflight": d.latency.max_inflight}


def config_values(cfg) -> dict:
    """Field values of struct nexus_config (bpf/include/nexus_structs.h) for this config."""
    d = cfg.dns
    rl = d.rate_limit
    interval = NS_PER_SEC // rl.rate
    return {
        "dns_ports": list(d.ports),
        "malformed_action": 1 if d.malformed == "pass" else 0,
        "rl_enabled": int(rl.enabled),
        "rl_action": 1 if rl.action == "slip" else 0,
        "rl_v4_prefix": rl.ipv4_prefix,
        "rl_v6_prefix": rl.ipv6_prefix,
        "rl_slip_ratio": rl.slip_ratio,
        "rl_interval_ns": interval,
        "rl_burst_ns": interval * rl.burst,
        "dga_mode": DGA_MODES[d.dga.mode],
        "dga_min_len": d.dga.min_length,
        "dga_threshold": d.dga.threshold,
        "cache_enabled": int(d.cache.enabled),
        "cache_min_ttl": d.cache.min_ttl,
        "cache_max_ttl": d.cache.max_ttl,
        "latency_enabled": int(d.latency.enabled),
        "block_response": BLOCK_RESPONSES[cfg.policy.block_response],
        "synth_ttl": cfg.policy.synth_ttl,
        "edns_udp_size": d.edns_udp_size,
    }


def config_writes(cfg) -> list[ConfigWrite]:
    loaded = [o.name for o in OBJECTS[:2] if o.needed(cfg)]
    if not loaded:
        return []
    out = [ConfigWrite("nexus_config", "nexus_config", loaded[0], config_values(cfg))]
    if "nexus_dns_xdp" in loaded:
        out.append(ConfigWrite("nexus_dga", "nexus_dga_table", "nexus_dns_xdp", dga.table_values()))
    return out
