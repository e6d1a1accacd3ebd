"""Where nexusctl finds its own files (bpf sources, packaged configs)."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# In a checkout (and an editable install) the project root holds bpf/ and configs/.
PROJECT_ROOT = PACKAGE_DIR.parent
SHARE_DIR = Path(os.environ.get("NEXUS_SHARE_DIR", "/usr/local/share/nexus"))


def _first_existing(*candidates: Path) -> Path:
    for c in candidates:
        if c.exists():
            return c
    return candidates[0]


def bpf_src_dir() -> Path:
    return _first_existing(PROJECT_ROOT / "bpf", SHARE_DIR / "bpf")


def configs_dir() -> Path:
    return _first_existing(PROJECT_ROOT / "configs", SHARE_DIR / "configs")


def default_build_dir() -> Path:
    if (PROJECT_ROOT / "bpf").exists() and os.access(PROJECT_ROOT, os.W_OK):
        return PROJECT_ROOT / "build"
    return Path("/var/lib/nexus/build")


DEFAULT_SYSTEM_CONFIG = Path("/etc/nexus/nexus.yaml")


def default_config_path() -> Path:
    """$NEXUS_CONFIG, else /etc/nexus/nexus.yaml, else the packaged configs/nexus.yaml."""
    env = os.environ.get("NEXUS_CONFIG")
    if env:
        return Path(env)
    if DEFAULT_SYSTEM_CONFIG.exists():
        return DEFAULT_SYSTEM_CONFIG
    return configs_dir() / "nexus.yaml"
