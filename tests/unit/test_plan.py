"""Planning and execution with a fake runner: order, dry-run, rollback."""
from pathlib import Path

import pytest

from helpers.fake import FakeRunner
from nexusctl.config import load_config_text
from nexusctl.engine.actions import Action, Ctx
from nexusctl.engine.executor import PlanFailed, execute
from nexusctl.engine.kernel import AttachTc, AttachXdp, EnsureClsact, LoadObject, WriteConfigMap
from nexusctl.engine.planner import plan_down, plan_up
from nexusctl.engine.state import Lock, State
from nexusctl.errors import ExitCode, Locked, OperationFailed

LAB = """
pin_root: /sys/fs/bpf/nexus-unit
state_dir: {state}
interfaces:
  - name: nx-srv0
    netns: nexus-srv
    veth_peer: {{name: nx-cli0, netns: nexus-cli}}
"""


def cfg(tmp_path):
    return load_config_text(LAB.format(state=tmp_path / "state"))


def test_up_plan_order(tmp_path):
    c = cfg(tmp_path)
    actions = plan_up(c, State.load(c.state_dir), build=False)
    kinds = [a.kind for a in actions]
    # load before config map before attach; XDP before TC; peer pass program last
    assert kinds.index("load") < kinds.index("config-map") < kinds.index("attach-xdp")
    loads = [a.spec.name for a in actions if isinstance(a, LoadObject)]
    assert loads == ["nexus_dns_xdp", "nexus_dns_tc", "nexus_xdp_pass"]
    xdp = [a for a in actions if isinstance(a, AttachXdp)]
    assert [(a.ifname, a.netns, a.role) for a in xdp] == [("nx-srv0", "nexus-srv", "dns"),
                                                          ("nx-cli0", "nexus-cli", "veth-peer")]
    tc = [a for a in actions if isinstance(a, (EnsureClsact, AttachTc))]
    assert [a.kind for a in tc] == ["clsact", "attach-tc"]
    assert "pref 21357 handle 0x1" in tc[1].describe()


def test_down_plan_from_state_detaches_before_unpinning(tmp_path):
    c = cfg(tmp_path)
    st = State.load(c.state_dir)
    st.data["attachments"] = {
        "xdp:nexus-srv/nx-srv0": {"kind": "xdp", "ifname": "nx-srv0", "netns": "nexus-srv"},
        "tc-egress:nexus-srv/nx-srv0": {"kind": "tc-egress", "ifname": "nx-srv0", "netns": "nexus-srv"},
        "clsact:nexus-srv/nx-srv0": {"kind": "clsact", "ifname": "nx-srv0", "netns": "nexus-srv", "created": True},
    }
    kinds = [a.kind for a in plan_down(c, st)]
    assert kinds[:3] == ["detach-tc", "clsact-del", "detach-xdp"]
    assert kinds[-2:] == ["unpin", "state"]


class Step(Action):
    kind = "step"

    def __init__(self, name, log, fail=False, done=False):
        self.name, self.log, self.fail, self.done = name, log, fail, done

    def describe(self):
        return self.name

    def satisfied(self, ctx):
        return self.done

    def apply(self, ctx):
        self.log.append(("apply", self.name))
        if self.fail:
            raise OperationFailed(f"{self.name} broke")

    def undo(self, ctx):
        self.log.append(("undo", self.name))


def _ctx(tmp_path):
    c = load_config_text(f"state_dir: {tmp_path}\n")
    return Ctx(FakeRunner(), c, State.load(tmp_path))


def test_dry_run_applies_nothing(tmp_path):
    log = []
    res = execute([Step("a", log), Step("b", log, done=True)], _ctx(tmp_path), dry_run=True)
    assert log == []
    assert [s.status for s in res.steps] == ["planned", "unchanged"]
    assert res.changed is False and res.would_change is True


def test_failure_rolls_back_in_reverse(tmp_path):
    log = []
    steps = [Step("a", log), Step("b", log, done=True), Step("c", log), Step("d", log, fail=True), Step("e", log)]
    with pytest.raises(PlanFailed) as e:
        execute(steps, _ctx(tmp_path))
    assert log == [("apply", "a"), ("apply", "c"), ("apply", "d"), ("undo", "d"), ("undo", "c"), ("undo", "a")]
    assert "rolled back" in e.value.message and "d broke" in e.value.message
    assert e.value.exit_code == ExitCode.FAILED


def test_second_run_is_unchanged(tmp_path):
    log = []
    res = execute([Step("a", log, done=True)], _ctx(tmp_path))
    assert res.changed is False
    assert res.to_json()["actions"] == []


def test_lock_contention_raises_exit_4(tmp_path):
    with Lock(tmp_path):
        with pytest.raises(Locked) as e:
            Lock(tmp_path).acquire()
    assert e.value.exit_code == ExitCode.LOCKED
    Lock(tmp_path).acquire().release()      # free again


def test_state_survives_corruption(tmp_path):
    (tmp_path / "state.json").write_text("{not json")
    st = State.load(tmp_path)
    assert st.objects == {}
    assert (tmp_path / "state.corrupt").exists()


def test_config_map_describe_lists_values(tmp_path):
    a = WriteConfigMap(Path("/sys/fs/bpf/x"), Path("/nonexistent.o"), {"dns_ports": [53], "malformed_action": 0})
    assert "dns_ports=[53]" in a.describe()
