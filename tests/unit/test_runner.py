"""The runner: missing tools exit 3 naming the package; bpftool errors are caught."""
import pytest

from helpers.fake import FakeRunner
from nexusctl.errors import ExitCode, Unsupported
from nexusctl.tools.runner import CommandFailed, Runner


def test_missing_tool_exits_3_naming_the_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    r = Runner()
    with pytest.raises(Unsupported) as e:
        r.run(["clang", "--version"])
    assert e.value.exit_code == ExitCode.UNSUPPORTED
    assert "apt-get install clang" in e.value.hint


def test_bpftool_json_error_is_a_failure():
    r = FakeRunner({("bpftool", "-j", "prog", "show"): (0, '{"error": "can\'t get prog by id (5): No such file"}', "")})
    with pytest.raises(CommandFailed, match="No such file"):
        r.bpftool("prog", "show", "id", "5")


def test_bpftool_nonzero_exit_is_a_failure():
    r = FakeRunner({("bpftool", "-j"): (255, "", "Error: oops")})
    with pytest.raises(CommandFailed):
        r.bpftool("map", "show")


def test_real_command_output_and_rc():
    r = Runner()
    res = r.run(["ip", "-V"], check=False)
    assert res.rc == 0 and "ip" in (res.stdout + res.stderr)
    res = r.run(["ip", "link", "show", "dev", "no-such-if-xyz"], check=False)
    assert res.rc != 0


def test_verbose_logs_each_command():
    lines = []
    r = Runner(verbose=True, log=lines.append)
    r.run(["ip", "-V"])
    assert lines == ["$ ip -V"]


def test_netns_commands_go_through_nsenter():
    r = FakeRunner()
    r.run(["ip", "link"], netns="nowhere-ns") if False else None
    # a missing namespace is a clear error before anything runs
    from nexusctl.errors import OperationFailed
    with pytest.raises(OperationFailed, match="network namespace nowhere-xyz does not exist"):
        Runner().run(["ip", "link"], netns="nowhere-xyz")
