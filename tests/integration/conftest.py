"""The lab for integration tests: its own NEXUS_LAB_ID (set in tests/conftest.py),
brought up once per module that asks for it and always torn down."""
from __future__ import annotations

import pytest

from helpers.cli import nexusctl
from nexusctl.ops.lab import LabSpec


@pytest.fixture(scope="session", autouse=True)
def _no_lab_left_behind():
    yield
    spec = LabSpec.from_env()
    from pathlib import Path
    if Path(f"/run/netns/{spec.srv_ns}").exists() or spec.pin_root.exists():
        nexusctl("lab", "down")


@pytest.fixture(scope="module")
def lab(built):
    spec = LabSpec.from_env()
    r = nexusctl("--json", "lab", "up")
    if r.rc != 0:
        nexusctl("lab", "down")
        pytest.fail(f"lab up failed ({r.rc}): {r.stderr}")
    try:
        yield spec
    finally:
        nexusctl("lab", "down")


def labcfg(spec: LabSpec) -> list[str]:
    return ["-c", str(spec.config_path)]
