"""Run the real nexusctl CLI as a subprocess and collect what a user sees."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str

    @property
    def json(self):
        return json.loads(self.stdout)


def nexusctl(*args: str, env: dict | None = None, timeout: float = 300, input: str | None = None) -> Result:
    e = {**os.environ, **(env or {})}
    e.pop("NEXUS_FAULT_AFTER_STEP", None) if not (env and "NEXUS_FAULT_AFTER_STEP" in env) else None
    p = subprocess.run([sys.executable, "-m", "nexusctl", *args], capture_output=True, text=True,
                       env=e, timeout=timeout, cwd=ROOT, input=input)
    return Result(p.returncode, p.stdout, p.stderr)


def run_in_netns(ns: str, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout)


def dig(ns: str, server: str, name: str, qtype: str = "A", *extra: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return run_in_netns(ns, ["dig", f"@{server}", name, qtype, "+time=2", "+tries=1", *extra], timeout=timeout)
