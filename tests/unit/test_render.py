"""Rendering: JSON is one document; tables carry what the data says."""
import io
import json

from rich.console import Console

from nexusctl import render
from nexusctl.app import App


def app(json_mode=False):
    a = App(json=json_mode)
    a.out = Console(file=io.StringIO(), width=200, force_terminal=False)
    a.err = Console(file=io.StringIO(), width=200, force_terminal=False)
    return a


STATUS = {"pin_root": "/sys/fs/bpf/nexus", "up": True, "warnings": ["nx-srv0: gone"],
          "programs": [{"name": "nexus_dns_xdp", "type": "xdp", "id": 7, "verified_insns": 100,
                        "attachments": [{"kind": "xdp", "target": "nexus-srv/nx-srv0", "mode": "generic",
                                         "reason": "native XDP refused"}]}],
          "maps": [{"name": "nexus_counters", "type": "percpu_array", "entries": 27, "max_entries": 27}]}


def test_status_table_shows_mode_and_reason():
    a = app()
    render.status(a, STATUS)
    out = a.out.file.getvalue()
    assert "nexus_dns_xdp" in out and "nexus-srv/nx-srv0" in out
    assert "generic (native XDP refused)" in out
    assert "100.0%" in out
    assert "nx-srv0: gone" in a.err.file.getvalue()


def test_emit_json_is_one_document(capsys):
    a = app(json_mode=True)
    render.emit(a, {"changed": False, "b": b"\x01"})
    out = capsys.readouterr().out
    assert json.loads(out) == {"changed": False, "b": "01"}
    assert out.count("\n") == 1


def test_table_of_nested_values():
    a = app()
    render.table(a, [{"key": "x", "value": {"a": 1}}], title="t")
    assert '{"a":1}' in a.out.file.getvalue()
