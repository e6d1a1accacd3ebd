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

PROG_TYPES = {  # bpftool feature key → (name, needed by)
    "have_xdp_prog_type": ("xdp", "DNS fast path"),
    "have_sched_cls_prog_type": ("sched_cls (tc)", "DNS answers/policy at TC egress"),
    "have_tracepoint_prog_type": ("tracepoint", "metrics"),
    "have_perf_event_prog_type": ("perf_event", "metrics (CPU sampling)"),
    "have_kprobe_prog_type": ("kprobe/uprobe", "certificate observer (uprobes)"),
    "have_cgroup_sock_addr_prog_type": ("cgroup_sock_addr", "DNS egress enforcer"),
    "have_tracing_prog_type": ("tracing (fentry/fexit)", "optional; not used"),
    "have_lsm_prog_type": ("lsm", "optional enforcer variant"),
}
MAP_TYPES = {
    "have_percpu_array_map_type": "percpu_array", "have_lru_hash_map_type": "lru_hash",
    "have_lpm_trie_map_type": "lpm_trie", "have_ringbuf_map_type": "ringbuf",
    "have_bloom_filter_map_type": "bloom_filter", "have_hash_of_maps_map_type": "hash_of_maps",
    "have_array_of_maps_map_type": "array_of_maps",
}
XDP_HELPERS = ["bpf_xdp_adjust_tail", "bpf_xdp_load_bytes", "bpf_xdp_store_bytes", "bpf_loop",
               "bpf_csum_diff", "bpf_ktime_get_ns"]


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
        for key, (name, why) in PROG_TYPES.items():
            ok = progs.get(key, False)
            if key == "have_kprobe_prog_type":
                ok = ok and uprobe
            checks.append(check(f"prog {name}", ok, why, f"kernel lacks {name} programs", group="programs",
                                 required=key in ("have_xdp_prog_type", "have_sched_cls_prog_type")))
        maps = feat.get("map_types", {})
        for key, name in MAP_TYPES.items():
            checks.append(check(f"map {name}", maps.get(key, False), "", f"kernel lacks {name} maps",
                                 group="maps", required=name in ("percpu_array", "lru_hash")))
        helpers = feat.get("helpers", {}).get("xdp_available_helpers", [])
        for h in XDP_HELPERS:
            checks.append(check(f"xdp helper {h}", h in helpers, "", f"kernel lacks {h}", group="helpers",
                                 required=h in ("bpf_xdp_adjust_tail", "bpf_csum_diff")))
    from nexusctl.features import FEATURES
    for f in FEATURES:
        if hasattr(f, "doctor_checks"):
            checks.extend(f.doctor_checks(app))
    missing = [c for c in checks if c["required"] and not c["ok"]]
    return {"ok": not missing, "checks": checks, "missing": [c["name"] for c in missing]}
