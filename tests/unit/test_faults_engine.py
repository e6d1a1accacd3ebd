"""The executor under faults, without a kernel: missing tools are found before
anything changes (exit 3), interfaces that all fail alike give that exit code,
the fault hook fires once after step N, and a failed run is never shown as done."""
from __future__ import annotations

import signal

import pytest
from rich.console import Console

from helpers.fake import FakeRunner
from nexusctl.app import App
from nexusctl.config import load_config_text
from nexusctl.engine import faults
from nexusctl.engine.actions import Action, Ctx
from nexusctl.engine.executor import PartialFailure, PlanFailed, execute
from nexusctl.engine.kernel import AttachTc, AttachXdp, DetachXdp, EnsureBpffs
from nexusctl.engine.state import State
from nexusctl.errors import ExitCode, OperationFailed, Unsupported
from nexusctl import render


class Step(Action):
    kind = "step"

    def __init__(self, name, log, iface=None, fail=None, tools=(), netns=None):
        self.name, self.log, self.iface, self.fail, self.tools, self.netns = name, log, iface, fail, tools, netns

    def describe(self):
        return self.name

    def apply(self, ctx):
        self.log.append(self.name)
        if self.fail:
            raise self.fail


def _ctx(tmp_path, runner=None):
    c = load_config_text(f"state_dir: {tmp_path}\n")
    return Ctx(runner or FakeRunner(), c, State.load(tmp_path))


def test_a_missing_tool_exits_3_before_anything_changes(tmp_path):
    log = []
    steps = [Step("mkdir", log), Step("load", log), Step("attach", log, "eth1", tools=("bpftool",))]
    with pytest.raises(Unsupported) as e:
        execute(steps, _ctx(tmp_path, FakeRunner(missing={"bpftool"})))
    assert log == []
    assert e.value.exit_code == ExitCode.UNSUPPORTED
    assert "bpftool is not installed" in e.value.message and "apt-get install bpftool" in e.value.hint


def test_commands_in_a_namespace_need_nsenter(tmp_path):
    log = []
    with pytest.raises(Unsupported, match="nsenter"):
        execute([Step("attach", log, tools=("tc",), netns="nexus-x")], _ctx(tmp_path, FakeRunner(missing={"nsenter"})))
    assert log == []


def test_kernel_actions_declare_their_tools(tmp_path):
    from pathlib import Path
    assert "bpftool" in AttachXdp("eth1", None, Path("/p"), "auto").needed_tools()
    assert "bpftool" in DetachXdp("eth1", "ns").needed_tools() and "nsenter" in DetachXdp("eth1", "ns").needed_tools()
    assert "tc" in AttachTc("eth1", None, Path("/p")).needed_tools()
    assert EnsureBpffs(Path("/sys/fs/bpf/x")).needed_tools() == ("mount",)


@pytest.mark.parametrize("errors,code", [
    ([Unsupported("no native XDP"), Unsupported("no native XDP")], 3),
    ([Unsupported("no native XDP"), OperationFailed("gone")], 1),
    ([OperationFailed("gone"), OperationFailed("gone")], 1),
])
def test_interfaces_that_all_fail_alike_give_that_exit_code(tmp_path, errors, code):
    log = []
    steps = [Step("a", log, "a", fail=errors[0]), Step("b", log, "b", fail=errors[1])]
    with pytest.raises(PartialFailure) as e:
        execute(steps, _ctx(tmp_path))
    assert e.value.exit_code == code


@pytest.mark.parametrize("sig,expect", [(None, signal.SIGKILL), ("KILL", signal.SIGKILL), ("STOP", signal.SIGSTOP)])
def test_fault_hook_signals_once_after_step_n(tmp_path, monkeypatch, sig, expect):
    sent = []
    log = []
    monkeypatch.setattr(faults.os, "kill", lambda pid, s: sent.append((len(log), s)))
    monkeypatch.setattr(faults, "_done", 0)
    monkeypatch.setenv(faults.FAULT_ENV, "2")
    if sig:
        monkeypatch.setenv(faults.FAULT_SIGNAL_ENV, sig)
    execute([Step(f"s{i}", log) for i in range(4)], _ctx(tmp_path))
    assert sent == [(2, expect)]                # right after the 2nd applied step, and only then


def test_checkpoints_inside_an_operation_count_as_steps(tmp_path, monkeypatch):
    """A long operation's own checkpoints (policy import) and the executor's steps
    share one count."""
    sent = []
    monkeypatch.setattr(faults.os, "kill", lambda pid, s: sent.append(s))
    monkeypatch.setattr(faults, "_done", 0)
    monkeypatch.setenv(faults.FAULT_ENV, "3")
    faults.step_done("stored")
    log = []
    execute([Step("a", log), Step("b", log)], _ctx(tmp_path))
    assert sent == [signal.SIGKILL] and log == ["a", "b"]


def test_a_failed_run_is_not_shown_as_done(tmp_path):
    log = []
    with pytest.raises(PlanFailed) as e:
        execute([Step("a", log), Step("b", log, fail=OperationFailed("b broke"))], _ctx(tmp_path), rollback=False)
    app = App(json=False)
    app.out = Console(record=True, width=200)
    app.err = Console(record=True, width=200)
    render.plan(app, e.value.result, "down")
    text = app.out.export_text()
    assert "down: failed" in text and "down: done" not in text
