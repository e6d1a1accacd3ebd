"""Reloading a program behind a pinned tracing link: the new link is attached
and pinned over the old one (attach new, then the old goes), the program's map
is reused, and the old program is released."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from nexusctl.config import load_config_text
from nexusctl.engine.actions import Ctx
from nexusctl.engine.build import clang_flags
from nexusctl.engine.executor import execute
from nexusctl.engine.kernel import LoadObject, PrepareMaps
from nexusctl.engine.links import AttachLink, LinkSpec
from nexusctl.engine.state import State
from nexusctl.features.base import ObjectSpec
from nexusctl.tools import libbpf as L
from nexusctl.tools import perf
from nexusctl.tools.runner import Runner

SRC = Path(__file__).parent / "bpf" / "nexus_lt_tp.c"
SPEC = ObjectSpec("nexus_lt_tp", ("nexus_lt_tp",), lambda c: True, "reload test")
LINK = LinkSpec("nexus_lt_tp_getppid", "nexus_lt_tp", "tracepoint", "syscalls:sys_enter_getppid",
                tp=("syscalls", "sys_enter_getppid"))


@pytest.fixture
def env(built, tmp_path):
    obj = tmp_path / "nexus_lt_tp.o"
    subprocess.run(["clang", *clang_flags(SRC.parent, built), "-c", str(SRC), "-o", str(obj)], check=True)
    pin_root = Path("/sys/fs/bpf") / f"nexus-test-ltlink-{os.getpid()}"
    try:
        yield obj, pin_root, tmp_path / "state"
    finally:
        shutil.rmtree(pin_root, ignore_errors=True)      # unpinning the link detaches it


def _run(obj, pin_root, state_dir, reload=False):
    cfg = load_config_text(f"pin_root: {pin_root}\nstate_dir: {state_dir}\n")
    ctx = Ctx(Runner(), cfg, State.load(state_dir))
    actions = [PrepareMaps([(SPEC, obj)], pin_root, {}), LoadObject(SPEC, obj, pin_root, {}, force=reload),
               AttachLink(LINK, pin_root)]
    return execute(actions, ctx)


def _hits(pin_root) -> int:
    with L.MapHandle.pinned(str(pin_root / "maps" / "nexus_lt_tp_hits")) as m:
        return int.from_bytes(m.lookup(b"\0" * 4), "little")


def _prog_exists(prog_id: int, tries: int = 100) -> bool:
    """The kernel releases links and programs from a work queue: poll a little (bounded)."""
    for _ in range(tries):
        try:
            os.close(L.prog_fd_by_id(prog_id))
        except OSError:
            return False
        time.sleep(0.02)
    return True


def test_reload_swaps_the_link_and_keeps_the_map(env):
    obj, pin_root, state = env
    _run(obj, pin_root, state)
    link = pin_root / "links" / LINK.name
    old_prog = perf.link_prog_id(str(link))
    for _ in range(5):
        os.getppid()
    before = _hits(pin_root)
    assert before >= 5

    res = _run(obj, pin_root, state)
    assert res.changed is False                      # nothing to do the second time

    res = _run(obj, pin_root, state, reload=True)
    assert [s.status for s in res.steps] == ["unchanged", "changed", "changed"]
    new_prog = perf.link_prog_id(str(link))
    assert new_prog != old_prog
    assert not _prog_exists(old_prog)                # the old link (and with it the old program) is gone
    assert not (pin_root / "links" / f"{LINK.name}_staging").exists()
    for _ in range(5):
        os.getppid()
    assert _hits(pin_root) >= before + 5             # same map, counted by the new program
