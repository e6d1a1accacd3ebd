"""The security review's claims (docs/security.md), each checked: no shell, the
runner takes argument lists of known tools only, interface/namespace names,
paths and map names are validated, YAML is loaded safely, nexus's directories
are 0700, metrics serve binds loopback by default, nothing executable comes
from a config, temporary files are made with O_EXCL."""
from __future__ import annotations

import ast
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.cli import nexusctl
from nexusctl.config import load_config_text
from nexusctl.config.model import Config
from nexusctl.engine.actions import Ctx
from nexusctl.engine.kernel import EnsureDir
from nexusctl.engine.state import Lock, State
from nexusctl.errors import ConfigError, NexusError, UsageError
from nexusctl.tools.runner import PACKAGES, Runner, netns_path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "nexusctl").rglob("*.py"))


def _trees():
    for p in SOURCES:
        yield p.relative_to(ROOT), ast.parse(p.read_text(), str(p))


# ---------------------------------------------------------------- 1. no shell strings

def test_no_module_but_the_runner_can_start_a_process():
    banned_modules = {"subprocess", "sh", "pty", "commands", "popen2"}
    banned_calls = {("os", n) for n in ("system", "popen", "execv", "execve", "execvp", "execvpe", "execl",
                                        "execlp", "execle", "spawnv", "spawnve", "spawnl", "posix_spawn",
                                        "posix_spawnp", "fork", "forkpty")}
    for rel, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            else:
                names = set()
            for n in names & banned_modules:
                assert str(rel) == "nexusctl/tools/runner.py" and n == "sh", f"{rel}:{node.lineno} imports {n}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    isinstance(node.func.value, ast.Name):
                assert (node.func.value.id, node.func.attr) not in banned_calls, \
                    f"{rel}:{node.lineno} calls {node.func.value.id}.{node.func.attr}"


def test_nothing_passes_shell_true_or_evaluates_code():
    for rel, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg in ("shell", "_shell"):
                pytest.fail(f"{rel}: a {node.arg}= keyword")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in ("eval", "exec", "compile"), f"{rel}:{node.lineno} {node.func.id}()"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = {a.name for a in node.names} if isinstance(node, ast.Import) else {node.module}
                assert not mods & {"pickle", "marshal", "shelve", "dill"}, f"{rel}:{node.lineno} {mods}"


def test_the_runner_refuses_a_shell_string():
    for bad in ("ip link show", b"ip link", []):
        with pytest.raises(TypeError, match="never a shell string"):
            Runner().run(bad)


@pytest.mark.parametrize("argv0", ["sh", "/bin/sh", "bash", "python3", "/usr/sbin/bpftool", "../bpftool",
                                   "bpftool; id"])
def test_the_runner_runs_only_the_tools_it_knows(argv0):
    with pytest.raises(NexusError, match="refusing to run"):
        Runner().run([argv0, "-c", "id"])


def test_the_runner_also_runs_nexusctl_itself():
    """bench times nexusctl as a user runs it: the interpreter running nexusctl is allowed."""
    res = Runner().run([sys.executable, "-c", "print('ok')"])
    assert res.stdout.strip() == "ok"


def test_shell_metacharacters_reach_the_tool_verbatim(tmp_path):
    """An argument is one argv element: `;`, `$()`, backticks and globs mean nothing."""
    canary = tmp_path / "pwned"
    evil = f"x; touch {canary} $(touch {canary}) `touch {canary}` *"
    res = Runner().run(["ip", "link", "show", "dev", evil], check=False)
    assert res.rc != 0 and not canary.exists()
    assert res.argv[-1] == evil


def test_every_literal_command_starts_with_a_known_tool():
    """Runner.run's first argument, wherever it is written out in the code, names a
    tool of PACKAGES; where it is built elsewhere (clang's and tc's argv helpers,
    doctor's tool table), those are checked here too."""
    seen = set()
    for rel, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "run" \
                    and node.args and isinstance(node.args[0], ast.List) and node.args[0].elts:
                first = node.args[0].elts[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    assert first.value in PACKAGES, f"{rel}:{node.lineno} runs {first.value}"
                    seen.add(first.value)
    assert {"bpftool", "ip", "tc", "mount"} <= seen
    from nexusctl.ops.doctor import TOOLS
    assert all(t in PACKAGES for t, _, _ in TOOLS)
    from nexusctl.engine.build import Compile
    assert Compile.argv.__code__.co_consts and "clang" in Compile.argv.__code__.co_consts
    from nexusctl.engine.kernel import AttachTc
    assert AttachTc("eth0", None, Path("/sys/fs/bpf/x")).argv()[0] == "tc"


# ---------------------------------------------------------------- 2. names and paths validated

BAD_IFNAMES = ["eth0; rm -rf /", "-h", "--help", "a/b", "../x", "..", ".", "", "x" * 16, "eth 0", "eth0\n",
               "$(id)", "`id`", "eth0|id", "é0"]


@pytest.mark.parametrize("name", BAD_IFNAMES)
def test_bad_interface_names_are_rejected(name):
    with pytest.raises(ConfigError, match="interfaces"):
        load_config_text(json.dumps({"interfaces": [{"name": name}]}))
    with pytest.raises(ConfigError):
        load_config_text(json.dumps({"interfaces": [{"name": "eth0", "veth_peer": {"name": name}}]}))


@pytest.mark.parametrize("ns", ["a/b", "../../proc/1/ns/net", "..", "-x", "", "ns name", "n" * 65])
def test_bad_namespace_names_are_rejected_in_config_and_runner(ns):
    with pytest.raises(ConfigError):
        load_config_text(json.dumps({"interfaces": [{"name": "eth0", "netns": ns}]}))
    with pytest.raises(UsageError):
        netns_path(ns)


@pytest.mark.parametrize("key,value", [("pin_root", "nexus"), ("pin_root", "/sys/fs/bpf/../../etc"),
                                       ("state_dir", "run/nexus"), ("state_dir", "/run/../etc")])
def test_pin_root_and_state_dir_are_absolute_without_dotdot(key, value):
    with pytest.raises(ConfigError, match=key):
        load_config_text(json.dumps({key: value}))


def test_good_names_pass():
    cfg = load_config_text(json.dumps({"interfaces": [{"name": "eth0.100", "netns": "nexus-srv",
                                                       "veth_peer": {"name": "veth@1", "netns": "n_2"}}]}))
    assert cfg.interfaces[0].name == "eth0.100"


@pytest.mark.parametrize("name", ["../progs/nexus_dns_xdp", "/etc/shadow", "a/b", "nexus-counters", ""])
def test_map_names_are_names_not_paths(tmp_path, name):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"pin_root: /sys/fs/bpf/nexus-none-{tmp_path.name[:12]}\nstate_dir: {tmp_path}\n")
    for cmd in (["maps", "dump", name], ["maps", "get", name, "0"]):
        r = nexusctl("--json", "-c", str(cfg), *cmd)
        assert r.rc == 2, (cmd, r.rc, r.stderr)
        assert "not a map name" in r.json["error"]


# ---------------------------------------------------------------- 3. YAML

def test_yaml_is_only_ever_loaded_safely():
    for rel, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "yaml":
                assert node.attr in ("safe_load", "safe_dump", "SafeLoader", "YAMLError", "MarkedYAMLError",
                                     "Node", "MappingNode", "SequenceNode"), f"{rel}:{node.lineno} yaml.{node.attr}"


@pytest.mark.parametrize("payload", [
    "!!python/object/apply:os.system ['touch {canary}']",
    "!!python/object/new:subprocess.Popen [['touch', '{canary}']]",
    "!!python/name:os.system",
])
def test_python_tags_in_a_config_are_refused_not_run(tmp_path, payload):
    canary = tmp_path / "pwned"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pin_root: " + payload.format(canary=canary) + "\n")
    r = nexusctl("--json", "-c", str(cfg), "config", "validate", str(cfg))
    assert r.rc == 2, r.stderr
    assert "not valid YAML" in r.json["error"] and not canary.exists()


# ---------------------------------------------------------------- 4. modes

def test_nexus_directories_are_0700_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        d = tmp_path / "a" / "b" / "pins"
        EnsureDir(d).apply(Ctx(Runner(), Config(), State.load(tmp_path)))
        for p in (tmp_path / "a", tmp_path / "a" / "b", d):
            assert stat.S_IMODE(p.stat().st_mode) == 0o700, p
        st_dir = tmp_path / "state"
        s = State.load(st_dir)
        s.save()
        assert stat.S_IMODE(st_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((st_dir / "state.json").stat().st_mode) == 0o600
        with Lock(st_dir):
            assert stat.S_IMODE((st_dir / "lock").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_every_directory_the_plan_creates_is_0700(tmp_path):
    from nexusctl.engine.planner import plan_up
    cfg = load_config_text(f"pin_root: /sys/fs/bpf/nexus-x\nstate_dir: {tmp_path}\n"
                           "interfaces: [{name: eth0}]\n")
    dirs = [a for a in plan_up(cfg, State.load(tmp_path), build=False) if isinstance(a, EnsureDir)]
    assert {str(a.path) for a in dirs} >= {str(tmp_path), "/sys/fs/bpf/nexus-x", "/sys/fs/bpf/nexus-x/progs",
                                           "/sys/fs/bpf/nexus-x/maps", "/sys/fs/bpf/nexus-x/links"}
    assert all(a.mode == 0o700 for a in dirs)


# ---------------------------------------------------------------- 5. metrics serve on loopback by default

def test_metrics_listen_defaults_to_loopback():
    assert Config().metrics.listen == "127.0.0.1:9435"
    text = (ROOT / "configs" / "nexus.yaml").read_text()
    assert load_config_text(text).metrics.listen.startswith("127.0.0.1:")


def test_metrics_serve_binds_loopback_when_not_told_otherwise(tmp_path):
    """Without --listen, serve takes metrics.listen (default loopback); the socket
    it opens is on that address."""
    import socket

    from nexusctl.app import App
    from nexusctl.ops.metrics import listen_address
    app = App(json=True)
    app.config = Config()
    assert listen_address(app, None) == ("127.0.0.1", 9435)
    with socket.socket() as s:                      # a free port on the default's host
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"pin_root: /sys/fs/bpf/nexus-none-{tmp_path.name[:12]}\nstate_dir: {tmp_path}\n"
                   f"metrics: {{listen: '127.0.0.1:{port}'}}\n")
    p = subprocess.Popen([sys.executable, "-m", "nexusctl", "--json", "-c", str(cfg), "metrics", "serve"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        url = json.loads(p.stdout.readline())["listening"]
        assert url == f"http://127.0.0.1:{port}/metrics" or url.startswith(f"http://127.0.0.1:{port}")
        conns = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
        local = [ln.split()[3] for ln in conns.splitlines()]           # State Recv-Q Send-Q Local Peer
        assert local == [f"127.0.0.1:{port}"], conns
    finally:
        p.terminate()
        p.wait(timeout=30)


# ---------------------------------------------------------------- 6. nothing executable from config

def test_no_config_field_names_a_program_or_command():
    """The config model has no field that could name something to run."""
    suspicious = ("command", "cmd", "exec", "script", "hook", "program", "binary", "shell", "plugin")

    def walk(model, prefix=""):
        for name, f in model.model_fields.items():
            assert not any(s in name.lower() for s in suspicious), f"{prefix}{name}"
            ann = f.annotation
            for t in getattr(ann, "__args__", ()) + (ann,):
                if isinstance(t, type) and hasattr(t, "model_fields"):
                    walk(t, f"{prefix}{name}.")
    walk(Config)


# ---------------------------------------------------------------- 7. temporary files

def test_metrics_textfile_does_not_follow_a_planted_symlink(tmp_path):
    """prometheus_client's write_to_textfile opens PATH.PID.TID following symlinks;
    nexusctl writes through mkstemp instead."""
    from nexusctl.app import App
    from nexusctl.ops import metrics as m
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    out = tmp_path / "nexus.prom"
    app = App(json=True)
    app.config = load_config_text(f"pin_root: /sys/fs/bpf/nexus-none-{tmp_path.name[:12]}\nstate_dir: {tmp_path}\n")
    import threading
    (tmp_path / f"nexus.prom.{os.getpid()}.{threading.current_thread().ident}").symlink_to(victim)
    res = m.textfile(app, str(out))
    assert victim.read_text() == "keep me"
    assert out.read_bytes().startswith(b"#") and res["bytes"] == out.stat().st_size
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".nexus.prom.")]
