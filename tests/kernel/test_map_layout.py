"""Map layouts across loads, in the kernel: a pinned map is reused when nothing
changed, and when its layout changed (a config's max_entries, a build whose
value struct moved fields, an enum that grew in the middle, a ring buffer that
grew) it is migrated field by field, or recreated with a warning, and every
object that shares it moves to the new map."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from nexusctl.config import load_config_text
from nexusctl.engine import maplayout, observe
from nexusctl.engine.actions import Action, Ctx
from nexusctl.engine.build import clang_flags
from nexusctl.engine.executor import PlanFailed, execute
from nexusctl.engine.kernel import LoadObject, PrepareMaps
from nexusctl.engine.state import State
from nexusctl.errors import OperationFailed
from nexusctl.features.base import ObjectSpec
from nexusctl.tools import libbpf as L
from nexusctl.tools.btf import Btf
from nexusctl.tools.runner import Runner

SRC = Path(__file__).parent / "bpf"
HASH, COUNTERS, EVENTS = "nexus_lt_hash", "nexus_lt_counters", "nexus_lt_events"


@pytest.fixture(scope="module")
def objs(built, tmp_path_factory):
    """{version: {object name: path}} for LT_VERSION 1 and 2."""
    out = {}
    for v in (1, 2):
        d = tmp_path_factory.mktemp(f"lt{v}")
        out[v] = {}
        for name in ("nexus_lt_a", "nexus_lt_b"):
            obj = d / f"{name}.o"
            subprocess.run(["clang", *clang_flags(SRC, built), f"-DLT_VERSION={v}", "-c", str(SRC / f"{name}.c"),
                            "-o", str(obj)], check=True, capture_output=True, text=True)
            out[v][name] = obj
    return out


@pytest.fixture
def env(tmp_path, monkeypatch):
    pin_root = Path("/sys/fs/bpf") / f"nexus-test-lt-{os.getpid()}"
    monkeypatch.setitem(maplayout.KEY_ENUMS, COUNTERS, "lt_counter")
    maplayout._declared.cache_clear()
    try:
        yield pin_root, tmp_path / "state"
    finally:
        shutil.rmtree(pin_root, ignore_errors=True)
        maplayout._declared.cache_clear()


def _ctx(pin_root, state_dir) -> Ctx:
    cfg = load_config_text(f"pin_root: {pin_root}\nstate_dir: {state_dir}\n")
    return Ctx(Runner(), cfg, State.load(state_dir))


def plan(pin_root, paths: dict[str, Path], sizes=None, extra=()):
    sizes = sizes or {}
    specs = [(ObjectSpec(n, (n,), lambda c: True, "layout test"), p) for n, p in paths.items()]
    return [PrepareMaps(specs, pin_root, sizes), *[LoadObject(s, p, pin_root, sizes) for s, p in specs], *extra]


def run(pin_root, state_dir, paths, sizes=None, dry_run=False, extra=()):
    ctx = _ctx(pin_root, state_dir)
    return execute(plan(pin_root, paths, sizes, extra), ctx, dry_run=dry_run), ctx


def map_id(pin_root, name) -> int:
    return observe.pinned_map(Runner(), pin_root / "maps" / name)["id"]


def prog_map_ids(pin_root, prog) -> set[int]:
    fd = L.obj_get(str(pin_root / "progs" / prog))
    try:
        return set(L.prog_map_ids(fd))
    finally:
        os.close(fd)


def fill_v1(pin_root, v1_obj):
    layout = Btf.from_elf(v1_obj).struct("lt_value")
    with L.MapHandle.pinned(str(pin_root / "maps" / HASH)) as m:
        for k in range(1, 11):
            m.update(k.to_bytes(4, "little"), layout.pack({"hits": 1000 + k, "flags": k}))
    ncpu = L.num_possible_cpus()
    with L.MapHandle.pinned(str(pin_root / "maps" / COUNTERS)) as m:
        m.update((0).to_bytes(4, "little"), [(5).to_bytes(8, "little")] * ncpu)     # FIRST
        m.update((1).to_bytes(4, "little"), [(7).to_bytes(8, "little")] * ncpu)     # LAST
    return ncpu


def read_hash(pin_root, obj) -> dict[int, dict]:
    layout = Btf.from_elf(obj).struct("lt_value")
    with L.MapHandle.pinned(str(pin_root / "maps" / HASH)) as m:
        return {int.from_bytes(k, "little"): layout.unpack(v) for k, v in m.items()}


def read_counters(pin_root) -> list[int]:
    with L.MapHandle.pinned(str(pin_root / "maps" / COUNTERS)) as m:
        return [sum(int.from_bytes(x, "little") for x in m.lookup(i.to_bytes(4, "little")))
                for i in range(m.info["max_entries"])]


def statuses(res) -> dict[str, str]:
    return {f"{s.action.kind}:{getattr(getattr(s.action, 'spec', None), 'name', '')}": s.status for s in res.steps}


def test_unchanged_layout_reuses_maps_and_second_run_is_unchanged(objs, env):
    pin_root, state = env
    res, _ = run(pin_root, state, objs[1])
    assert res.changed
    ids = {n: map_id(pin_root, n) for n in (HASH, COUNTERS, EVENTS)}
    # both objects share one copy of each map
    assert prog_map_ids(pin_root, "nexus_lt_a") >= {ids[HASH], ids[COUNTERS]}
    assert prog_map_ids(pin_root, "nexus_lt_b") >= {ids[HASH], ids[COUNTERS]}
    res, _ = run(pin_root, state, objs[1])
    assert res.changed is False and res.to_json()["actions"] == []
    assert {n: map_id(pin_root, n) for n in ids} == ids


def test_config_max_entries_change_migrates_and_moves_every_sharer(objs, env):
    pin_root, state = env
    run(pin_root, state, objs[1])
    fill_v1(pin_root, objs[1]["nexus_lt_a"])
    old_hash = map_id(pin_root, HASH)

    # --check first: planned, nothing touched
    res, _ = run(pin_root, state, objs[1], sizes={HASH: 128}, dry_run=True)
    prep = res.steps[0]
    assert prep.status == "planned" and "max_entries 64 → 128" in prep.action.reason
    assert map_id(pin_root, HASH) == old_hash

    res, _ = run(pin_root, state, objs[1], sizes={HASH: 128})
    new_hash = map_id(pin_root, HASH)
    assert new_hash != old_hash
    info = observe.pinned_map(Runner(), pin_root / "maps" / HASH)
    assert info["max_entries"] == 128
    assert read_hash(pin_root, objs[1]["nexus_lt_a"]) == {k: {"hits": 1000 + k, "flags": k, "pad": 0}
                                                          for k in range(1, 11)}
    assert any("nexus_lt_hash changed layout (max_entries 64 → 128): migrated 10 entries" in w
               for w in res.warnings), res.warnings
    # neither object is left on the old copy
    st = statuses(res)
    assert st["load:nexus_lt_a"] == "changed" and st["load:nexus_lt_b"] == "changed"
    for prog in ("nexus_lt_a", "nexus_lt_b"):
        ids = prog_map_ids(pin_root, prog)
        assert new_hash in ids and old_hash not in ids
    # the other maps were kept as they were
    assert read_counters(pin_root) == [5 * L.num_possible_cpus(), 7 * L.num_possible_cpus()]
    res, _ = run(pin_root, state, objs[1], sizes={HASH: 128})
    assert res.changed is False


def test_new_value_struct_and_enum_are_migrated_by_name(objs, env):
    pin_root, state = env
    run(pin_root, state, objs[1])
    ncpu = fill_v1(pin_root, objs[1]["nexus_lt_a"])
    old = {n: map_id(pin_root, n) for n in (HASH, COUNTERS, EVENTS)}

    res, ctx = run(pin_root, state, objs[2])
    reason = res.steps[0].action.reason
    # same value size: libbpf alone would have reused the map with the old BTF
    assert "nexus_lt_hash: value fields: added extra; removed pad; moved flags, hits" in reason
    assert "key enum: added LT_CNT_MIDDLE; renumbered LT_CNT_LAST" in reason
    assert "nexus_lt_events: max_entries 4096 → 8192" in reason
    new = {n: map_id(pin_root, n) for n in old}
    assert all(new[n] != old[n] for n in old)

    # values carried by field name into the new offsets; the new field is zero
    assert read_hash(pin_root, objs[2]["nexus_lt_a"]) == {k: {"hits": 1000 + k, "flags": k, "extra": 0}
                                                          for k in range(1, 11)}
    # counters remapped by enumerator name: LAST moved from 1 to 2, MIDDLE starts at 0
    assert read_counters(pin_root) == [5 * ncpu, 0, 7 * ncpu]
    # the pinned map now carries the new BTF (what `maps dump` decodes with)
    pinned = maplayout.pinned_layout(observe.pinned_map(Runner(), pin_root / "maps" / HASH), HASH)
    want = {d.name: d for d in maplayout.declared_maps(objs[2]["nexus_lt_a"])}
    assert pinned.value_sig == want[HASH].value_sig
    assert any("nexus_lt_events changed layout" in w and "recreated empty" in w for w in res.warnings)
    for prog in ("nexus_lt_a", "nexus_lt_b"):
        assert prog_map_ids(pin_root, prog) >= {new[HASH], new[COUNTERS], new[EVENTS]}
    res, _ = run(pin_root, state, objs[2])
    assert res.changed is False


def test_objects_that_disagree_on_a_map_fail_before_anything_changes(objs, env):
    pin_root, state = env
    run(pin_root, state, objs[1])
    before = {n: map_id(pin_root, n) for n in (HASH, COUNTERS)}
    with pytest.raises(PlanFailed) as e:
        run(pin_root, state, {"nexus_lt_a": objs[2]["nexus_lt_a"], "nexus_lt_b": objs[1]["nexus_lt_b"]})
    assert "declare map nexus_lt_hash differently" in e.value.message
    assert {n: map_id(pin_root, n) for n in before} == before


class Boom(Action):
    kind = "boom"

    def describe(self):
        return "fail on purpose"

    def apply(self, ctx):
        raise OperationFailed("boom")


def test_failed_run_puts_the_old_maps_back(objs, env):
    pin_root, state = env
    run(pin_root, state, objs[1])
    fill_v1(pin_root, objs[1]["nexus_lt_a"])
    before = map_id(pin_root, HASH)
    ctx = _ctx(pin_root, state)
    actions = plan(pin_root, objs[1], sizes={HASH: 256})
    actions = [actions[0], Boom()]          # maps prepared, then a failure before any load
    with pytest.raises(PlanFailed) as e:
        execute(actions, ctx)
    assert "rolled back" in e.value.message
    assert map_id(pin_root, HASH) == before
    assert len(read_hash(pin_root, objs[1]["nexus_lt_a"])) == 10
    assert not (pin_root / "maps" / f"staging_{HASH}").exists()
