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


def test_lazy_registration_knows_every_command():
    """Each top-level command maps to the module that registers it (main() imports only that one)."""
    import typer
    from nexusctl.cli import app as appmod
    appmod._register()
    names = set(typer.main.get_command(appmod.app).commands)
    assert names <= set(appmod.COMMAND_MODULE), names - set(appmod.COMMAND_MODULE)
    for cmd in names:
        fresh = typer.Typer()
        fresh.callback()(lambda: None)           # a group, even with one command
        mod = __import__(f"nexusctl.cli.{appmod.COMMAND_MODULE[cmd]}", fromlist=["x"])
        if hasattr(mod, "register"):
            mod.register(fresh)
        else:
            fresh.add_typer(mod.app, name=appmod.COMMAND_MODULE[cmd])
        assert cmd in typer.main.get_command(fresh).commands, cmd


def test_status_does_not_import_other_command_modules(tmp_path):
    import subprocess
    import sys
    code = ("import sys; from nexusctl.cli.app import register_for; register_for(['status']); "
            "print(sorted(m for m in sys.modules if m.startswith('nexusctl.cli.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert "nexusctl.cli.deploy" in out and "nexusctl.cli.policy" not in out and "nexusctl.cli.cache" not in out
