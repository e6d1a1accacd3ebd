"""Where rules come from, and where user space keeps them.

Sources, from lowest to highest precedence (a pattern named by two sources
takes the later one's rule):
  blocklist:<file>  the config's `blocklists:`, read at up/apply/sync
  import:<name>     lists imported with `policy import`, kept in state_dir/policy/imports/
  config            the config's `policies:`
  runtime           rules added with `policy add`, kept in state_dir/policy/runtime.json
`up`/`apply` load all of them; `policy sync` makes the kernel match the config
alone (blocklists + policies) and forgets imports and runtime rules.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from nexusctl.fsutil import atomic_write
from nexusctl.policy.rules import Attrs, Group

NAME_RE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass
class Source:
    name: str
    groups: list[Group] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(g.patterns) for g in self.groups)


def policy_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "policy"


def _attrs_json(a: Attrs) -> dict:
    return {"action": a.action, "priority": a.priority, "to": [x for x in (a.to4, a.to6) if x],
            "qtypes": list(a.qtypes), "block": a.block}


def _attrs_from(d: dict) -> Attrs:
    return Attrs.make(d["action"], d.get("priority", 100), d.get("to") or None, d.get("qtypes") or (),
                      d.get("block"))


# ---------------------------------------------------------------- runtime rules

def runtime_path(state_dir: Path) -> Path:
    return policy_dir(state_dir) / "runtime.json"


def load_runtime(state_dir: Path) -> dict[str, Attrs]:
    try:
        data = json.loads(runtime_path(state_dir).read_text())
    except FileNotFoundError:
        return {}
    return {r["pattern"]: _attrs_from(r) for r in data.get("rules", [])}


def save_runtime(state_dir: Path, rules: dict[str, Attrs]) -> None:
    doc = {"rules": [{"pattern": p, **_attrs_json(a)} for p, a in sorted(rules.items())]}
    atomic_write(runtime_path(state_dir), json.dumps(doc, indent=1).encode())


# ---------------------------------------------------------------- imports

def import_name(path: Path) -> str:
    return NAME_RE.sub("_", Path(path).stem)[:48] or "list"


def imports_dir(state_dir: Path) -> Path:
    return policy_dir(state_dir) / "imports"


def save_import(state_dir: Path, name: str, groups: list[Group], meta: dict) -> None:
    """Two files: NAME.json (groups' rules and counts, metadata) and NAME.list (patterns in order).
    The .list is written first; the .json, which names it, last: a torn import is not seen."""
    d = imports_dir(state_dir)
    body = "\n".join(p for g in groups for p in g.patterns).encode()
    atomic_write(d / f"{name}.list", body)
    head = {"name": name, **meta, "groups": [{"attrs": _attrs_json(g.attrs), "count": len(g.patterns)}
                                             for g in groups],
            "sha256": hashlib.sha256(body).hexdigest()}
    atomic_write(d / f"{name}.json", json.dumps(head, indent=1).encode())


def load_imports(state_dir: Path) -> list[Source]:
    d = imports_dir(state_dir)
    out = []
    if not d.is_dir():
        return out
    for head_path in sorted(d.glob("*.json")):
        head = json.loads(head_path.read_text())
        body = (d / f"{head['name']}.list").read_bytes()
        patterns = body.decode().split("\n") if body else []
        groups, i = [], 0
        for g in head["groups"]:
            n = g["count"]
            groups.append(Group(_attrs_from(g["attrs"]), patterns[i:i + n]))
            i += n
        out.append(Source(f"import:{head['name']}", groups))
    return out


def remove_import(state_dir: Path, name: str) -> bool:
    d = imports_dir(state_dir)
    found = False
    for suffix in (".json", ".list"):
        try:
            (d / f"{name}{suffix}").unlink()
            found = True
        except FileNotFoundError:
            pass
    return found


def forget_runtime_and_imports(state_dir: Path) -> tuple[int, int]:
    rt = len(load_runtime(state_dir))
    runtime_path(state_dir).unlink(missing_ok=True)
    n = 0
    for s in load_imports(state_dir):
        remove_import(state_dir, s.name.split(":", 1)[1])
        n += 1
    return rt, n


# ---------------------------------------------------------------- sources of a config

def config_sources(cfg) -> list[Source]:
    from nexusctl.policy.formats import parse_file
    out = []
    for bl in cfg.blocklists:
        attrs = Attrs.make(bl.action, bl.priority, bl.to)
        parsed = parse_file(bl.path, bl.format, attrs)
        out.append(Source(f"blocklist:{bl.path}", parsed.groups, parsed.problems))
    rules = []
    for r in cfg.policies:
        rules.append(Group(Attrs.make(r.action, r.priority, r.to, r.qtypes), [r.pattern]))
    out.append(Source("config", rules))
    return out


def runtime_source(state_dir: Path) -> Source:
    rt = load_runtime(state_dir)
    return Source("runtime", [Group(a, [p]) for p, a in rt.items()])


def all_sources(cfg, config_only: bool = False) -> list[Source]:
    """Every source, lowest precedence first (see the module docstring)."""
    srcs = config_sources(cfg)
    if config_only:
        return srcs
    blocklists, config = srcs[:-1], srcs[-1]
    return [*blocklists, *load_imports(cfg.state_dir), config, runtime_source(cfg.state_dir)]


def fingerprint(sources: list[Source]) -> str:
    h = hashlib.sha256()
    for s in sources:
        h.update(s.name.encode() + b"\0")
        for g in s.groups:
            h.update(json.dumps(_attrs_json(g.attrs), sort_keys=True).encode())
            h.update("\n".join(g.patterns).encode() + b"\0")
    return h.hexdigest()


def effective_rules(sources: list[Source]) -> dict[str, tuple[Attrs, str]]:
    """pattern → (attrs, source): what the kernel holds after loading the sources in order."""
    out: dict[str, tuple[Attrs, str]] = {}
    for s in sources:
        for g in s.groups:
            for p in g.patterns:
                out[p] = (g.attrs, s.name)
    return out
