"""Operations logic without a kernel: plan shape for up/reload, per-interface
failure isolation, --check and --diff in the executor, the help of every
command, shell completion."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from helpers.fake import FakeRunner
from nexusctl.config import load_config_text
from nexusctl.engine.actions import Action, Ctx
from nexusctl.engine.executor import PartialFailure, PlanFailed, execute
from nexusctl.engine.kernel import AttachTc, AttachXdp, EnsureClsact, LoadObject, PrepareMaps
from nexusctl.engine.planner import plan_down, plan_up
from nexusctl.engine.state import State
from nexusctl.errors import OperationFailed
from nexusctl.render import _diff_lines
from nexusctl.tools import netlink

TWO = """
pin_root: /sys/fs/bpf/nexus-unit
state_dir: {state}
interfaces:
  - name: eth1
  - name: nx-srv0
    netns: nexus-srv
    veth_peer: {{name: nx-cli0, netns: nexus-cli}}
"""


def cfg(tmp_path):
    return load_config_text(TWO.format(state=tmp_path / "state"))


def test_plan_prepares_maps_before_any_load_and_tags_interfaces(tmp_path):
    c = cfg(tmp_path)
    actions = plan_up(c, State.load(c.state_dir), build=False)
    kinds = [a.kind for a in actions]
    assert kinds.index("maps") < kinds.index("load")
    prep = next(a for a in actions if isinstance(a, PrepareMaps))
    assert [s.name for s, _ in prep.objects] == ["nexus_dns_xdp", "nexus_dns_tc", "nexus_xdp_pass"]
    attach = [a for a in actions if isinstance(a, (AttachXdp, EnsureClsact, AttachTc))]
    assert {a.iface for a in attach} == {"eth1", "nexus-srv/nx-srv0"}
    peer = next(a for a in attach if isinstance(a, AttachXdp) and a.role == "veth-peer")
    assert peer.iface == "nexus-srv/nx-srv0"        # the peer belongs to its interface's unit
    assert all(a.iface is None for a in actions if isinstance(a, (LoadObject, PrepareMaps)))
    assert not any(a.force for a in actions if isinstance(a, LoadObject))


def test_reload_forces_every_load_and_down_is_all_or_nothing(tmp_path):
    c = cfg(tmp_path)
    st = State.load(c.state_dir)
    loads = [a for a in plan_up(c, st, build=False, reload=True) if isinstance(a, LoadObject)]
    assert loads and all(a.force for a in loads)
    ctx = Ctx(FakeRunner(), c, st)
    assert loads[0].satisfied(ctx) is False and loads[0].reason.startswith("reload")
    assert all(a.iface is None for a in plan_down(c, st))


class Step(Action):
    kind = "step"

    def __init__(self, name, log, iface=None, fail=False, done=False, diff=None):
        self.name, self.log, self.iface, self.fail, self.done, self._diff = name, log, iface, fail, done, diff

    def describe(self):
        return self.name

    def satisfied(self, ctx):
        self.reason = "" if self.done else f"{self.name} is not there"
        return self.done

    def diff(self, ctx):
        return self._diff

    def apply(self, ctx):
        self.log.append(("apply", self.name))
        if self.fail:
            raise OperationFailed(f"{self.name} broke", "fix " + self.name)

    def undo(self, ctx):
        self.log.append(("undo", self.name))


def _ctx(tmp_path):
    c = load_config_text(f"state_dir: {tmp_path}\n")
    return Ctx(FakeRunner(), c, State.load(tmp_path))


def test_one_failing_interface_is_undone_alone_and_the_others_go_on(tmp_path):
    log = []
    steps = [Step("load", log), Step("a1", log, "a"), Step("b1", log, "b"), Step("b2", log, "b", fail=True),
             Step("b3", log, "b"), Step("a2", log, "a"), Step("c1", log, "c", done=True)]
    with pytest.raises(PartialFailure) as e:
        execute(steps, _ctx(tmp_path))
    assert log == [("apply", "load"), ("apply", "a1"), ("apply", "b1"), ("apply", "b2"),
                   ("undo", "b2"), ("undo", "b1"), ("apply", "a2")]
    res = e.value.result
    assert [s.status for s in res.steps] == ["changed", "changed", "rolled_back", "failed", "skipped", "changed",
                                             "unchanged"]
    rows = {r["interface"]: r for r in res.interfaces()}
    assert rows["a"]["status"] == "changed" and rows["c"]["status"] == "unchanged"
    assert rows["b"] == {"interface": "b", "status": "failed", "error": "b2 broke"}
    assert e.value.exit_code == 1 and "1 of 3 interface(s) failed" in e.value.message
    assert e.value.hint == "fix b2"
    doc = e.value.out
    assert doc["changed"] is True and doc["interfaces"] == res.interfaces()


def test_a_failure_outside_interfaces_still_rolls_everything_back(tmp_path):
    log = []
    with pytest.raises(PlanFailed):
        execute([Step("a1", log, "a"), Step("load", log, fail=True)], _ctx(tmp_path))
    assert log == [("apply", "a1"), ("apply", "load"), ("undo", "load"), ("undo", "a1")]


def test_check_reports_would_change_and_lists_only_planned_steps(tmp_path):
    log = []
    res = execute([Step("x", log, diff={"f": [0, 1]}), Step("y", log, done=True)], _ctx(tmp_path),
                  check=True, diff=True)
    assert log == []
    doc = res.to_json()
    assert doc["changed"] is True and doc["check"] is True and doc["dry_run"] is True
    assert doc["actions"] == [{"kind": "step", "action": "x", "reason": "x is not there", "status": "planned",
                               "diff": {"f": [0, 1]}}]
    res = execute([Step("y", log, done=True)], _ctx(tmp_path), check=True)
    assert res.to_json()["changed"] is False and res.to_json()["actions"] == []


def test_diff_is_collected_only_when_asked(tmp_path):
    log = []
    res = execute([Step("x", log, diff={"f": [0, 1]})], _ctx(tmp_path))
    assert "diff" not in res.to_json()["actions"][0]
    res = execute([Step("x", log, diff={"f": [0, 1]})], _ctx(tmp_path), diff=True)
    assert res.to_json()["actions"][0]["diff"] == {"f": [0, 1]}
    assert [str(t) for t in _diff_lines({"f": [0, 1], "g": [None, "new"]})] == \
        ["     - f: 0", "     + f: 1", "     + g: new"]


def _commands(group, path=()):
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*path, name))
        else:
            yield (*path, name)


def test_every_command_has_man_style_help_with_examples():
    from nexusctl.cli.app import _register, app
    _register()
    root = typer.main.get_command(app)
    missing = []
    runner = CliRunner()
    cmds = list(_commands(root))
    assert {("apply",), ("reload",), ("gc",), ("doctor",), ("maps", "dump")} <= set(cmds)
    for path in cmds:
        r = runner.invoke(app, [*path, "--help"])
        if r.exit_code != 0 or "Examples:" not in r.output or "nexusctl" not in r.output.split("Examples:")[1]:
            missing.append(" ".join(path))
    assert missing == [], f"commands whose --help has no examples: {missing}"


def test_shell_completion_completes_commands_and_options():
    env = {**os.environ, "_NEXUSCTL_COMPLETE": "complete_bash", "COMP_WORDS": "nexusctl rel", "COMP_CWORD": "1"}
    p = subprocess.run([sys.executable, "-m", "nexusctl"], env=env, capture_output=True, text=True)
    assert p.stdout.split() == ["reload"]
    env.update(COMP_WORDS="nexusctl apply --c", COMP_CWORD="2")
    p = subprocess.run([sys.executable, "-m", "nexusctl"], env=env, capture_output=True, text=True)
    assert "--check" in p.stdout.split()
    p = subprocess.run([sys.executable, "-m", "nexusctl", "--show-completion", "bash"], capture_output=True,
                       text=True)
    assert "_nexusctl_completion" in p.stdout


def test_netlink_attributes_round_trip():
    raw = netlink._attr(1, (7).to_bytes(4, "little")) + netlink._attr(3, (0x23).to_bytes(8, "little"))
    attrs = netlink._attrs(raw)
    assert int.from_bytes(attrs[1], "little") == 7
    assert netlink.feature_names(int.from_bytes(attrs[3], "little")) == ["basic", "redirect", "rx-sg"]


def test_feature_map_sizes_reach_the_map_check_and_every_load(tmp_path, monkeypatch):
    from nexusctl.features import dns
    monkeypatch.setattr(dns, "map_sizes", lambda c: {"nexus_counters": 64}, raising=False)
    c = cfg(tmp_path)
    actions = plan_up(c, State.load(c.state_dir), build=False)
    prep = next(a for a in actions if isinstance(a, PrepareMaps))
    assert prep.map_sizes["nexus_counters"] == 64
    assert all(a.map_sizes["nexus_counters"] == 64 for a in actions if isinstance(a, LoadObject))
