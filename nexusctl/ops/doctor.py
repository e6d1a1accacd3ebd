"""doctor: probe kernel, bpffs, BTF and tools; each finding comes with its fix."""
from __future__ import annotations

import os
import platform
from pathlib import Path

from nexusctl.engine import observe
from nexusctl.errors import Unsupported

TOOLS = [  # (tool, version args, required for)
    ("clang", ["--version"], "build"), ("bpftool", ["version"], "load/inspect"),
    ("ip", ["-V"], "attach XDP / lab"), ("tc", ["-V"], "attach TC"), ("nsenter", ["--version"], "netns attach"),
    ("unbound", ["-V"], "lab resolver"), ("dig", ["-v"], "lab queries"), ("dnsperf", ["-h"], "benchmarks"),
]

PROG_TYPES = {  # bpftool feature key → (name, needed by, fix)
    "have_xdp_prog_type": ("xdp", "DNS fast path", "use a kernel with CONFIG_BPF_SYSCALL and XDP (4.8+)"),
    "have_sched_cls_prog_type": ("sched_cls (tc)", "DNS answers/policy at TC egress",
                                 "use a kernel with CONFIG_NET_CLS_BPF and CONFIG_NET_SCH_INGRESS"),
    "have_tracepoint_prog_type": ("tracepoint", "metrics", "use a kernel with CONFIG_BPF_EVENTS"),
    "have_perf_event_prog_type": ("perf_event", "metrics (CPU sampling)", "use a kernel with CONFIG_BPF_EVENTS"),
    "have_kprobe_prog_type": ("kprobe/uprobe", "certificate observer (uprobes)",
                              "use a kernel with CONFIG_UPROBE_EVENTS (only the certificate observer needs it)"),
    "have_cgroup_sock_addr_prog_type": ("cgroup_sock_addr", "DNS egress enforcer",
                                        "use a kernel with CONFIG_CGROUP_BPF and cgroup v2 mounted"),
    "have_tracing_prog_type": ("tracing (fentry/fexit)", "optional; not used",
                               "nothing to do: nexus uses tracepoints and uprobes instead"),
    "have_lsm_prog_type": ("lsm", "optional enforcer variant",
                           "optional: CONFIG_BPF_LSM=y and `lsm=...,bpf` on the kernel command line; "
                           "the enforcer works with cgroup hooks without it"),
}
MAP_TYPES = {  # bpftool feature key → (name, kernel version that brought it)
    "have_percpu_array_map_type": ("percpu_array", "4.6"), "have_lru_hash_map_type": ("lru_hash", "4.10"),
    "have_lpm_trie_map_type": ("lpm_trie", "4.11"), "have_ringbuf_map_type": ("ringbuf", "5.8"),
    "have_bloom_filter_map_type": ("bloom_filter", "5.16"), "have_hash_of_maps_map_type": ("hash_of_maps", "4.12"),
    "have_array_of_maps_map_type": ("array_of_maps", "4.12"),
}
XDP_HELPERS = {"bpf_xdp_adjust_tail": "4.18", "bpf_xdp_load_bytes": "5.18", "bpf_xdp_store_bytes": "5.18",
               "bpf_loop": "5.17", "bpf_csum_diff": "4.6", "bpf_ktime_get_ns": "4.1"}
# Single-buffer XDP (nexus's programs do not declare xdp.frags) cannot take frames
# larger than a page minus headroom: about this MTU on veth and most drivers.
XDP_SINGLE_BUFFER_MTU = 3498


def check(name, ok, detail="", fix="", required=True, group="kernel"):
    return {"group": group, "name": name, "ok": bool(ok), "detail": detail, "fix": "" if ok else fix,
            "required": required}


def doctor(app) -> dict:
    r = app.runner
    checks = []
    rel = platform.release()
    checks.append(check("kernel", True, rel, group="kernel"))
    btf = Path("/sys/kernel/btf/vmlinux")
    checks.append(check("BTF", btf.exists(), str(btf) if btf.exists() else "missing",
                         "use a kernel built with CONFIG_DEBUG_INFO_BTF=y"))
    bpffs = observe.on_bpffs(Path("/sys/fs/bpf"))
    checks.append(check("bpffs", bpffs, "/sys/fs/bpf" if bpffs else "not mounted",
                         "mount -t bpf bpf /sys/fs/bpf (nexusctl up does this)", required=False))
    tracefs = Path("/sys/kernel/tracing/events").exists() or Path("/sys/kernel/debug/tracing/events").exists()
    checks.append(check("tracefs", tracefs, "/sys/kernel/tracing" if tracefs else "not mounted",
                         "mount -t tracefs nodev /sys/kernel/tracing", required=False))
    cg = observe.mount_of(Path("/sys/fs/cgroup/unified"))
    cg2 = "/sys/fs/cgroup/unified" if cg and cg[1] == "cgroup2" else (
        "/sys/fs/cgroup" if (observe.mount_of(Path("/sys/fs/cgroup")) or ("", ""))[1] == "cgroup2" else None)
    checks.append(check("cgroup v2", cg2, cg2 or "not mounted", "mount -t cgroup2 none /sys/fs/cgroup/unified",
                         required=False))
    uprobe = Path("/sys/bus/event_source/devices/uprobe").exists()
    checks.append(check("uprobe PMU", uprobe, "perf uprobe PMU" if uprobe else "missing",
                         "kernel needs CONFIG_UPROBE_EVENTS", required=False))
    kprobe = Path("/sys/kernel/tracing/kprobe_events").exists() or Path("/sys/kernel/debug/tracing/kprobe_events").exists()
    checks.append(check("kprobes", kprobe, "available" if kprobe else "CONFIG_KPROBE_EVENTS is off",
                         "not needed: nexus uses uprobes and tracepoints", required=False))
    try:
        r.libbpf
        checks.append(check("libbpf", True, "libbpf.so.1", group="tools"))
    except Unsupported as e:
        checks.append(check("libbpf", False, str(e), "apt-get install libbpf1", group="tools"))
    for tool, args, why in TOOLS:
        if r.has(tool):
            res = r.run([tool, *args], check=False, quiet=True, timeout=10)
            ver = (res.stdout or res.stderr).strip().splitlines()
            checks.append(check(tool, True, ver[0][:80] if ver else "", group="tools",
                                 required=tool in ("clang", "bpftool", "ip", "tc")))
        else:
            from nexusctl.tools.runner import PACKAGES
            checks.append(check(tool, False, f"needed for {why}", f"apt-get install {PACKAGES.get(tool, tool)}",
                                 group="tools", required=tool in ("clang", "bpftool", "ip", "tc")))
    if os.geteuid() != 0:
        checks.append(check("root", False, "not root", "run as root (BPF needs CAP_BPF, CAP_NET_ADMIN)"))
    elif r.has("bpftool"):
        feat = r.bpftool("feature", "probe", "kernel", check=False) or {}
        progs = feat.get("program_types", {})
        for key, (name, why, fix) in PROG_TYPES.items():
            ok = progs.get(key, False)
            if key == "have_kprobe_prog_type":
                ok = ok and uprobe
            checks.append(check(f"prog {name}", ok, why, fix, group="programs",
                                 required=key in ("have_xdp_prog_type", "have_sched_cls_prog_type")))
        maps = feat.get("map_types", {})
        for key, (name, since) in MAP_TYPES.items():
            checks.append(check(f"map {name}", maps.get(key, False), "", f"use a kernel {since} or newer",
                                 group="maps", required=name in ("percpu_array", "lru_hash")))
        helpers = feat.get("helpers", {}).get("xdp_available_helpers", [])
        for h, since in XDP_HELPERS.items():
            checks.append(check(f"xdp helper {h}", h in helpers, "", f"use a kernel {since} or newer",
                                 group="helpers", required=h in ("bpf_xdp_adjust_tail", "bpf_csum_diff")))
    interfaces = interface_report(app)
    for row in interfaces:
        checks.extend(row.pop("checks"))
    from nexusctl.features import FEATURES
    for f in FEATURES:
        if hasattr(f, "doctor_checks"):
            checks.extend(f.doctor_checks(app))
    missing = [c for c in checks if c["required"] and not c["ok"]]
    return {"ok": not missing, "checks": checks, "missing": [c["name"] for c in missing],
            "interfaces": interfaces}


def _driver(link: dict) -> str:
    kind = (link.get("linkinfo") or {}).get("info_kind")
    if kind:
        return kind
    bus, dev = link.get("parentbus"), link.get("parentdev")
    if bus and dev:
        drv = Path(f"/sys/bus/{bus}/devices/{dev}/driver")
        try:
            return os.path.basename(os.readlink(drv))
        except OSError:
            return f"{bus} device {dev}"
    return "unknown"


def interface_report(app) -> list[dict]:
    """Per configured interface (and veth peer): does it exist, its driver, what XDP it
    supports (the kernel's netdev xdp-features, read without attaching anything), what
    runs on it now, and a finding with its fix for everything that would stop `up`."""
    from nexusctl.tools import netlink
    try:
        cfg = app.config
    except Exception:  # noqa: BLE001 - a broken config is `config validate`'s finding, not doctor's
        return []
    r = app.runner
    targets = []
    for i in cfg.interfaces:
        targets.append((i.name, i.netns, i.xdp_mode if i.xdp else None, "dns", i))
        if i.veth_peer:
            targets.append((i.veth_peer.name, i.veth_peer.netns, "auto", "veth-peer", i))
    features_by_ns: dict = {}
    rows = []
    for name, ns, mode, role, iface in targets:
        key = f"{ns}/{name}" if ns else name
        row = {"interface": key, "role": role, "exists": False, "driver": None, "mtu": None,
               "xdp_features": None, "native_xdp": None, "attached": None, "wanted_mode": mode, "checks": []}
        rows.append(row)
        label = f"interface {key}"
        link = None
        if not ns or observe.netns_path(ns).exists():
            res = r.run(["ip", "-d", "-j", "link", "show", "dev", name], netns=ns, check=False, quiet=True)
            link = (res.json() or [None])[0] if res.rc == 0 else None
        if link is None:
            row["checks"].append(check(label, False, "does not exist" + (f" (netns {ns})" if ns else ""),
                                       f"create it, or fix `interfaces:` in {cfg.source}", group="interfaces"))
            continue
        row.update(exists=True, driver=_driver(link), mtu=link.get("mtu"))
        if ns not in features_by_ns:
            try:
                features_by_ns[ns] = netlink.xdp_features(ns)
            except OSError as e:
                features_by_ns[ns] = e
        feats = features_by_ns[ns]
        if isinstance(feats, dict) and link.get("ifindex") in feats:
            mask = feats[link["ifindex"]]
            row["xdp_features"] = netlink.feature_names(mask)
            row["native_xdp"] = bool(mask & 1)
        live = observe.xdp_state(r, name, ns) or {}
        if live.get("prog_id"):
            row["attached"] = {"prog": live.get("prog_name"), "id": live.get("prog_id"), "mode": live.get("mode")}
        detail = f"driver {row['driver']}, mtu {row['mtu']}"
        if row["native_xdp"] is None:
            row["checks"].append(check(f"{label}: native XDP", False, detail + "; xdp-features unknown "
                                       f"({feats if isinstance(feats, OSError) else 'not reported'})",
                                       "nothing needed with xdp_mode: auto (native first, generic if refused); "
                                       "a kernel 6.3+ reports what the driver supports",
                                       required=False, group="interfaces"))
        elif row["native_xdp"]:
            row["checks"].append(check(f"{label}: native XDP", True,
                                       f"{detail}; {', '.join(row['xdp_features'])}", group="interfaces"))
        else:
            row["checks"].append(check(f"{label}: native XDP", False, f"{detail}; the driver has no native XDP",
                                       "set xdp_mode: auto or generic for it (generic XDP is slower but works "
                                       "everywhere)" if mode == "native" else
                                       "nothing needed: xdp_mode auto uses generic XDP here",
                                       required=mode == "native", group="interfaces"))
        if mode and mode != "generic" and (row["mtu"] or 0) > XDP_SINGLE_BUFFER_MTU \
                and "rx-sg" not in (row["xdp_features"] or []):
            row["checks"].append(check(f"{label}: MTU", False,
                                       f"mtu {row['mtu']} is above what single-buffer native XDP takes "
                                       f"(about {XDP_SINGLE_BUFFER_MTU})",
                                       f"lower it (`ip link set dev {name} mtu 1500`) or use xdp_mode: generic",
                                       required=mode == "native", group="interfaces"))
        if live.get("prog_id") and not (live.get("prog_name") or "").startswith(observe.NEXUS_PROG_PREFIX):
            row["checks"].append(check(f"{label}: XDP slot", False,
                                       f"runs {live.get('prog_name')} (id {live.get('prog_id')}), not nexus's",
                                       f"detach it (`ip link set dev {name} xdp off`) or remove the interface "
                                       "from the config", group="interfaces"))
        if role == "dns" and row["driver"] == "veth" and not iface.veth_peer and iface.xdp:
            row["checks"].append(check(f"{label}: veth peer", False,
                                       "answers sent back with XDP_TX are dropped unless the peer runs XDP",
                                       "add `veth_peer: {name: PEER, netns: NS}` to the interface",
                                       required=False, group="interfaces"))
    return rows
