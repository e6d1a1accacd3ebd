"""YAML → validated Config, with every error naming file:line and the field."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from nexusctl.config.model import Config
from nexusctl.errors import ConfigError

Path_ = tuple  # a path into the document: ("dns", "rate_limit", "burst") or ("interfaces", 0)


class _Loader(yaml.SafeLoader):
    """safe_load plus the line of every key and list item."""


def _walk(loader: _Loader, node: yaml.Node, path: Path_, lines: dict, fname: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for knode, vnode in node.value:
            key = loader.construct_object(knode, deep=True)
            if isinstance(key, (list, dict)):
                raise ConfigError(f"{fname}:{knode.start_mark.line + 1}: a mapping key must be a plain value")
            if key in seen:
                raise ConfigError(f"{fname}:{knode.start_mark.line + 1}: {_dotted(path + (key,))}: "
                                  f"duplicate key (the earlier one would be silently ignored)")
            seen.add(key)
            lines[path + (key,)] = knode.start_mark.line + 1
            _walk(loader, vnode, path + (key,), lines, fname)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _walk(loader, item, path + (i,), lines, fname)


def _dotted(path: Path_) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or "(top level)"


def parse_yaml(text: str, fname: str) -> tuple[Any, dict]:
    """Parse YAML safely; return (data, {path: line})."""
    lines: dict = {(): 1}
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return {}, lines
            _walk(loader, node, (), lines, fname)
            data = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        raise ConfigError(f"{fname}:{line}: not valid YAML: {e.problem or e}",
                          "fix the syntax at that line") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{fname}: not valid YAML: {e}") from None
    return data, lines


def _line_for(loc: Path_, lines: dict) -> int:
    loc = tuple(loc)
    while loc and loc not in lines:
        loc = loc[:-1]
    return lines.get(loc, 1)


def _describe(err: dict) -> str:
    typ = err.get("type", "")
    if typ == "extra_forbidden":
        return "unknown key (check the spelling; see the config reference in README.md)"
    if typ == "missing":
        return "required field is missing"
    msg = err.get("msg", "invalid value")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return msg[0].lower() + msg[1:] if msg else msg


def _clean_loc(loc: tuple) -> tuple:
    # pydantic inserts tags for unions/literals (e.g. 'function-after[...]'); keep data keys only.
    return tuple(p for p in loc if isinstance(p, int) or not ("[" in str(p) or "(" in str(p)))


def validate(data: Any, lines: dict, fname: str, base_dir: Path | None = None) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{fname}:1: the config must be a mapping of settings, not {type(data).__name__}")
    try:
        cfg = Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            loc = _clean_loc(err["loc"])
            msgs.append(f"{fname}:{_line_for(loc, lines)}: {_dotted(loc)}: {_describe(err)}")
        first, rest = msgs[0], msgs[1:]
        raise ConfigError(first, "fix the field named above and run `nexusctl config validate FILE`",
                          details="\n".join(rest) if rest else None) from None
    cfg._source = fname
    return cfg


def load_config_text(text: str, fname: str = "<config>", base_dir: Path | None = None) -> Config:
    data, lines = parse_yaml(text, fname)
    return validate(data, lines, fname, base_dir)


def load_config(path: Path | str) -> Config:
    if str(path) == "-":
        # `-c -`: the config on standard input (Ansible's check mode plans against the
        # candidate config this way); relative paths resolve against the working directory.
        import sys
        return load_config_text(sys.stdin.read(), "<stdin>", base_dir=Path.cwd())
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found",
                          "pass -c FILE, set NEXUS_CONFIG, or create /etc/nexus/nexus.yaml") from None
    except PermissionError:
        raise ConfigError(f"{path}: config file is not readable (permission denied)",
                          "run as root or fix the file's permissions") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: config file is not UTF-8 text") from None
    return load_config_text(text, str(path), base_dir=path.resolve().parent)
