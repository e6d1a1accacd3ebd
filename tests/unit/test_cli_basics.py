"""Argument handling, exit codes and the JSON envelope, without the kernel."""
import json

from helpers.cli import nexusctl
from nexusctl.cli.app import hoist_globals


def test_global_flags_move_to_the_front():
    assert hoist_globals(["status", "--json"]) == ["--json", "status"]
    assert hoist_globals(["maps", "dump", "x", "-v", "-c", "f.yaml"]) == ["-v", "-c", "f.yaml", "maps", "dump", "x"]
    assert hoist_globals(["policy", "add", "--", "--json"]) == ["policy", "add", "--", "--json"]


def test_unknown_command_is_usage_error():
    r = nexusctl("frobnicate")
    assert r.rc == 2
    assert "frobnicate" in r.stderr
    assert "Traceback" not in r.stderr


def test_version():
    r = nexusctl("--version")
    assert r.rc == 0 and r.stdout.startswith("nexusctl ")


def test_json_error_is_one_document(tmp_path):
    r = nexusctl("--json", "-c", str(tmp_path / "missing.yaml"), "status")
    assert r.rc == 2
    doc = json.loads(r.stdout)          # exactly one document
    assert doc["exit_code"] == 2 and "not found" in doc["error"]


def test_every_command_has_help_with_an_example():
    for cmd in (["up"], ["down"], ["status"], ["build"], ["verify"], ["maps", "get"], ["stats"], ["doctor"]):
        r = nexusctl(*cmd, "--help")
        assert r.rc == 0, cmd
        assert "xample" in r.stdout, cmd
