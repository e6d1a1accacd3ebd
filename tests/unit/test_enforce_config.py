"""The enforce section: validation with file:line, path resolution, the
allow-list key layout and the plan (no kernel)."""
import ipaddress
import textwrap
from pathlib import Path

import pytest

from nexusctl.config import load_config, load_config_text
from nexusctl.errors import ConfigError, ExitCode, OperationFailed
from nexusctl.features import enforce as feat


def write(tmp_path, text):
    p = tmp_path / "nexus.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_defaults_and_a_full_section():
    cfg = load_config_text("")
    assert cfg.enforce.enabled is False and cfg.enforce.mode == "enforce" and cfg.enforce.lsm == "off"
    assert cfg.enforce.ports == [53, 853]
    cfg = load_config_text(textwrap.dedent("""\
        enforce:
          enabled: true
          mode: audit
          lsm: off
          ports: [53]
          cgroups:
            - path: system.slice/app.service/
              allow: [198.18.0.1, "2001:db8:18::1", 10.0.0.0/8, "2001:db8::/32"]
            - {path: /sys/fs/cgroup/unified/b, allow: [], ports: [53, 853, 5353]}
        """))
    e = cfg.enforce
    assert e.lsm == "off"                               # YAML's bare `off` is false
    assert e.cgroups[0].path == "system.slice/app.service"
    assert e.cgroups[0].allow == ["198.18.0.1/32", "2001:db8:18::1/128", "10.0.0.0/8", "2001:db8::/32"]
    assert e.ports_of(e.cgroups[0]) == [53] and e.ports_of(e.cgroups[1]) == [53, 853, 5353]


@pytest.mark.parametrize("body,line,field,msg", [
    ("""\
        enforce:
          enabled: true
          cgroups:
            - path: a
              allow:
                - 198.18.0.1
                - 198.18.0.1/24
        """, 7, "enforce.cgroups[0].allow[1]", "host bits set; did you mean 198.18.0.0/24"),
    ("""\
        enforce:
          cgroups:
            - path: a
              allow: [resolver.example]
        """, 4, "enforce.cgroups[0].allow[0]", "not an IPv4/IPv6 address"),
    ("""\
        enforce:
          mode: block
        """, 2, "enforce.mode", "input should be 'audit' or 'enforce'"),
    ("""\
        enforce:
          cgroups:
            - path: a
            - path: a/
        """, 2, "enforce.cgroups", "cgroup a is listed twice"),
    ("""\
        enforce:
          ports: [53, 53]
        """, 2, "enforce.ports", "listed twice"),
    ("""\
        enforce:
          cgroups:
            - path: ../etc
        """, 3, "enforce.cgroups[0].path", "must not contain '..'"),
    ("""\
        enforce:
          enabled: true
        """, 1, "enforce", "no cgroups are listed"),
    ("""\
        enforce:
          cgroups:
            - path: a
              allow: [198.18.0.1]
              alow: [198.18.0.2]
        """, 5, "enforce.cgroups[0].alow", "unknown key"),
])
def test_errors_name_file_line_and_field(tmp_path, body, line, field, msg):
    p = write(tmp_path, body)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.message.startswith(f"{p}:{line}: {field}: "), e.value.message
    assert msg in e.value.message
    assert e.value.exit_code == ExitCode.USAGE


def test_allow_key_maps_ipv4_into_ipv6_and_counts_policy_bits():
    k = feat.allow_key("198.18.0.0/24", 3)
    assert k["prefixlen"] == 32 + 96 + 24 and k["policy"] == 3
    raw = b"".join(w.to_bytes(4, "little") for w in k["addr"])
    assert raw == ipaddress.ip_address("::ffff:198.18.0.0").packed
    k6 = feat.allow_key("2001:db8:18::1/128", 0)
    assert k6["prefixlen"] == 160
    assert b"".join(w.to_bytes(4, "little") for w in k6["addr"]) == ipaddress.ip_address("2001:db8:18::1").packed


def test_resolve_path_relative_absolute_and_proc_style(monkeypatch):
    mount = Path("/sys/fs/cgroup/unified")
    monkeypatch.setattr(feat.observe, "mount_of",
                        lambda p: (str(mount), "cgroup2") if str(p).startswith(str(mount)) else ("/", "ext4"))
    assert feat.resolve_path("app", mount) == mount / "app"
    assert feat.resolve_path("/sys/fs/cgroup/unified/app", mount) == mount / "app"
    assert feat.resolve_path("/system.slice/x.service", mount) == mount / "system.slice/x.service"
    assert feat.resolve_path("/", mount) == mount


def _fake_cgroups(tmp_path, monkeypatch, paths):
    """A directory tree standing in for the cgroup2 mount."""
    mount = tmp_path / "cg2"
    for p in paths:
        (mount / p).mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(feat, "cgroup2_mount", lambda: mount)
    monkeypatch.setattr(feat.observe, "mount_of",
                        lambda p: (str(mount), "cgroup2") if str(p).startswith(str(mount)) else ("/", "ext4"))
    return mount


def _cfg(tmp_path, cgroups: str, extra: str = ""):
    return load_config_text(f"pin_root: /sys/fs/bpf/nexus-unit\nstate_dir: {tmp_path / 'state'}\n"
                            f"enforce:\n  enabled: true\n{extra}  cgroups:\n{cgroups}")


def test_links_go_to_topmost_configured_cgroups_only(tmp_path, monkeypatch):
    mount = _fake_cgroups(tmp_path, monkeypatch, ["a/b/c", "d"])
    cfg = _cfg(tmp_path, "    - {path: a/b/c, allow: [198.18.0.3]}\n    - {path: a, allow: [198.18.0.1]}\n"
                         "    - {path: /d, allow: []}\n")
    res = feat.resolve_cgroups(cfg)
    assert [(r.index, r.level, r.covered_by) for r in res] == [(0, 3, mount / "a"), (1, 1, None), (2, 1, None)]
    links = feat.links(cfg)
    assert {(s.kind, s.target, s.cgroup[1]) for s in links} == {
        ("cgroup", str(mount / d), h) for d in ("a", "d") for h in feat.CGROUP_HOOKS}
    assert len({s.name for s in links}) == 8
    # pin names depend on the cgroup, not on its position in the list
    cfg2 = _cfg(tmp_path, "    - {path: /d, allow: []}\n    - {path: a, allow: [198.18.0.1]}\n")
    assert {s.name for s in feat.links(cfg2)} == {s.name for s in links}


def test_missing_cgroup_is_a_clear_error(tmp_path, monkeypatch):
    _fake_cgroups(tmp_path, monkeypatch, [])
    cfg = _cfg(tmp_path, "    - {path: nope, allow: []}\n")
    with pytest.raises(OperationFailed) as e:
        feat.links(cfg)
    assert "does not exist" in e.value.message and "enforce.cgroups[0]" in e.value.message


def test_lsm_required_without_lsm_is_unsupported(tmp_path, monkeypatch):
    _fake_cgroups(tmp_path, monkeypatch, ["a"])
    monkeypatch.setattr(feat, "lsm_support", lambda build_dir: (False, "the kernel refuses LSM programs"))
    cfg = _cfg(tmp_path, "    - {path: a, allow: []}\n", extra="  lsm: required\n")
    with pytest.raises(Exception) as e:
        feat.use_lsm(cfg)
    assert e.value.exit_code == ExitCode.UNSUPPORTED and "not supported" in e.value.message
    auto = _cfg(tmp_path, "    - {path: a, allow: []}\n", extra="  lsm: auto\n")
    assert feat.use_lsm(auto) is False
    assert [o.name for o in feat.OBJECTS if o.needed(auto)] == ["nexus_enforce"]


def test_plan_writes_policy_before_attaching(tmp_path, monkeypatch):
    from nexusctl.engine.planner import plan_up
    from nexusctl.engine.state import State
    _fake_cgroups(tmp_path, monkeypatch, ["a"])
    cfg = _cfg(tmp_path, "    - {path: a, allow: [198.18.0.1]}\n")
    kinds = [a.kind for a in plan_up(cfg, State.load(cfg.state_dir), build=False)]
    assert kinds.index("load") < kinds.index("enforce-policy") < kinds.index("attach-link")
    assert kinds.count("attach-link") == 4
