"""Shared fixtures. Kernel and lab tests need root and a BPF-capable kernel;
everything they create (pins, namespaces, attachments) is removed in
finalizers, so a failing test leaves nothing behind."""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

# One lab per checkout, so two checkouts can test side by side on one host.
os.environ.setdefault("NEXUS_LAB_ID", "t" + hashlib.sha1(str(ROOT).encode()).hexdigest()[:3])


def _kernel_ok() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if not Path("/sys/kernel/btf/vmlinux").exists():
        return "kernel has no BTF"
    if not shutil.which("clang") or not shutil.which("bpftool"):
        return "clang/bpftool missing (run make setup)"
    return None


def pytest_collection_modifyitems(config, items):
    why = _kernel_ok()
    for item in items:
        path = str(item.fspath)
        if "/tests/kernel/" in path or "/tests/integration/" in path:
            item.add_marker(pytest.mark.root)
            if why:
                item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(scope="session")
def built():
    """Every bpf/*.c compiled into build/ (once per session)."""
    from nexusctl.app import App
    from nexusctl.config import load_config_text
    from nexusctl.ops import build as build_ops
    app = App(json=True)
    app.config = load_config_text(f"build_dir: {ROOT / 'build'}\n")
    mnt = Path("/sys/fs/bpf")
    if not os.path.ismount(mnt):
        os.system("mount -t bpf bpf /sys/fs/bpf")
    build_ops.build(app)
    return ROOT / "build"


@pytest.fixture
def dns_objs(built, request):
    """nexus_dns_xdp + nexus_dns_tc loaded with shared maps in a private pin dir."""
    from helpers.bpf import Loaded, private_pin_dir
    sizes = getattr(request, "param", None)
    lo = Loaded(["nexus_dns_xdp", "nexus_dns_tc"], private_pin_dir(request.node.name), map_sizes=sizes)
    try:
        yield lo
    finally:
        lo.close()
