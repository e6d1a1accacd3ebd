"""The Ansible role against this machine (connection local), on the test lab:
it installs nexusctl from a git checkout, templates the config (to a temp path,
never /etc/nexus), runs `nexusctl apply --json` with changed_when from the JSON;
the first run changes, the second reports changed=0, and --check plans a change
without making it."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers.cli import nexusctl
from integration.conftest import labcfg

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / "deploy" / "ansible"
PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
RECAP = re.compile(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


def _run(tmp: Path, variables: dict, *flags: str) -> tuple[dict, str]:
    (tmp / "vars.json").write_text(json.dumps(variables))
    inv = tmp / "inventory.ini"
    inv.write_text(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": str(tmp), "ANSIBLE_LOCAL_TEMP": str(tmp / "atmp"), "ANSIBLE_REMOTE_TEMP": str(tmp / "atmp"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_ROLES_PATH": str(ANSIBLE / "roles"), "ANSIBLE_RETRY_FILES_ENABLED": "0",
           "ANSIBLE_CONFIG": str(tmp / "none.cfg"), "NEXUS_LAB_ID": "", "LANG": "C.UTF-8"}
    p = subprocess.run([str(PLAYBOOK), "-i", str(inv), str(ANSIBLE / "playbook.yml"), "-e", f"@{tmp / 'vars.json'}",
                        "-e", "nexus_hosts=localhost", *flags], capture_output=True, text=True, env=env, timeout=600)
    out = p.stdout + p.stderr
    m = RECAP.search(out)
    assert m, f"no recap (rc {p.returncode}):\n{out[-4000:]}"
    ok, changed, unreachable, failed = map(int, m.groups())
    assert p.returncode == 0 and failed == 0 and unreachable == 0, out[-4000:]
    return {"ok": ok, "changed": changed}, out


def _lab_config(lab, malformed: str) -> dict:
    data = yaml.safe_load(lab.config_path.read_text())
    data.pop("build_dir", None)
    data["dns"]["malformed"] = malformed
    return data


def _malformed_action(lab) -> int:
    r = nexusctl("--json", *labcfg(lab), "maps", "dump", "nexus_config")
    return r.json["entries"][0]["value"]["malformed_action"]


@pytest.fixture
def work(lab, tmp_path):
    try:
        yield tmp_path
    finally:
        r = nexusctl(*labcfg(lab), "apply")           # the lab as it was, with this checkout's objects
        shutil.rmtree(tmp_path / "prefix", ignore_errors=True)
        assert r.rc == 0, r.stderr


def test_role_installs_applies_and_is_idempotent(lab, work):
    conf = work / "etc" / "nexus.yaml"
    variables = {"nexus_install": True, "nexus_git_repo": str(ROOT), "nexus_git_version": "HEAD",
                 "nexus_prefix": str(work / "prefix"), "nexus_config_path": str(conf),
                 "nexus_config": _lab_config(lab, "pass")}
    first, out = _run(work, variables)
    assert first["changed"] >= 3, out[-3000:]             # checkout + setup + config + apply
    assert (work / "prefix" / ".venv" / "bin" / "nexusctl").exists()
    assert yaml.safe_load(conf.read_text())["dns"]["malformed"] == "pass"
    assert _malformed_action(lab) == 1                     # applied to the live map

    second, out = _run(work, variables)
    assert second["changed"] == 0, out[-3000:]

    # check mode plans the change back (template and apply would change) and makes none
    variables["nexus_config"] = _lab_config(lab, "drop")
    checked, out = _run(work, variables, "--check", "--diff")
    assert checked["changed"] == 2, out[-3000:]
    assert "malformed_action" in out
    assert _malformed_action(lab) == 1
    assert yaml.safe_load(conf.read_text())["dns"]["malformed"] == "pass"


def test_role_expects_an_installed_nexusctl(lab, work):
    conf = work / "nexus.yaml"
    variables = {"nexusctl": str(Path(sys.executable).parent / "nexusctl"), "nexus_config_path": str(conf),
                 "nexus_config": _lab_config(lab, "drop")}
    first, out = _run(work, variables)
    assert first["changed"] >= 1 and conf.exists(), out[-3000:]
    second, out = _run(work, variables)
    assert second["changed"] == 0, out[-3000:]
    variables["nexusctl"] = str(work / "no-such-nexusctl")
    (work / "vars.json").write_text(json.dumps(variables))
    p = subprocess.run([str(PLAYBOOK), "-i", str(work / "inventory.ini"), str(ANSIBLE / "playbook.yml"),
                        "-e", f"@{work / 'vars.json'}", "-e", "nexus_hosts=localhost"], capture_output=True,
                       text=True, env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(work),
                                       "ANSIBLE_LOCAL_TEMP": str(work / "atmp"), "ANSIBLE_REMOTE_TEMP": str(work / "atmp"),
                                       "ANSIBLE_ROLES_PATH": str(ANSIBLE / "roles"), "ANSIBLE_NOCOLOR": "1",
                                       "LANG": "C.UTF-8"}, timeout=300)
    assert p.returncode != 0 and "no-such-nexusctl does not exist" in p.stdout
