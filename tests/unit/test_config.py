"""Config errors name file:line and the field, and exit 2 from the CLI."""
import textwrap

import pytest

from helpers.cli import nexusctl
from nexusctl.config import load_config, load_config_text
from nexusctl.errors import ConfigError, ExitCode


def write(tmp_path, text, name="nexus.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_defaults_are_valid():
    cfg = load_config_text("")
    assert str(cfg.pin_root) == "/sys/fs/bpf/nexus"
    assert cfg.dns.ports == [53]
    assert cfg.policy.block_response == "nxdomain"


def test_unknown_key_names_file_line_and_field(tmp_path):
    p = write(tmp_path, """\
        dns:
          ports: [53]
          rate_limit:
            rate: 10
            brust: 20
        """)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.message.startswith(f"{p}:5: dns.rate_limit.brust: unknown key")
    assert e.value.exit_code == ExitCode.USAGE


def test_wrong_type_names_file_line_and_field(tmp_path):
    p = write(tmp_path, """\
        interfaces:
          - name: eth0
            xdp_mode: turbo
        """)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.message.startswith(f"{p}:3: interfaces[0].xdp_mode:")
    assert "native" in e.value.message


def test_integer_field_given_a_string(tmp_path):
    p = write(tmp_path, "dns:\n  cache:\n    max_entries: lots\n")
    with pytest.raises(ConfigError, match=r":3: dns.cache.max_entries: input should be a valid integer"):
        load_config(p)


def test_duplicate_keys_are_rejected(tmp_path):
    p = write(tmp_path, "pin_root: /sys/fs/bpf/a\npin_root: /sys/fs/bpf/b\n")
    with pytest.raises(ConfigError, match=r":2: pin_root: duplicate key"):
        load_config(p)


def test_yaml_syntax_error_has_a_line(tmp_path):
    p = write(tmp_path, "dns:\n  ports: [53\n  malformed: drop\n")
    with pytest.raises(ConfigError, match=r"nexus.yaml:\d+: not valid YAML"):
        load_config(p)


def test_relative_pin_root_rejected(tmp_path):
    p = write(tmp_path, "pin_root: relative/dir\n")
    with pytest.raises(ConfigError, match=r":1: pin_root: 'relative/dir' must be an absolute path"):
        load_config(p)


def test_bad_interface_name(tmp_path):
    p = write(tmp_path, "interfaces:\n  - name: ../../etc\n")
    with pytest.raises(ConfigError, match=r":2: interfaces\[0\].name: .* not a valid interface name"):
        load_config(p)


def test_policy_rule_validation(tmp_path):
    p = write(tmp_path, "policies:\n  - {pattern: ads.example, action: redirect}\n")
    with pytest.raises(ConfigError, match=r":2: policies\[0\]: .*redirect needs `to"):
        load_config(p)


def test_policy_patterns_are_normalised():
    cfg = load_config_text("policies:\n  - {pattern: '*.Ads.Example.', action: block}\n"
                           "  - {pattern: 'tracker*', action: block}\n")
    assert [r.pattern for r in cfg.policies] == ["*.ads.example", "tracker*"]


def test_blocklist_path_relative_to_config(tmp_path):
    p = write(tmp_path, "blocklists:\n  - {path: lists/bad.txt}\n")
    assert load_config(p).blocklists[0].path == tmp_path / "lists/bad.txt"


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_cli_validate_exit_codes(tmp_path):
    good = write(tmp_path, "dns:\n  ports: [53]\n", "good.yaml")
    bad = write(tmp_path, "dns:\n  ports: [53]\n  colour: blue\n", "bad.yaml")
    r = nexusctl("config", "validate", str(good))
    assert r.rc == 0, r.stderr
    r = nexusctl("config", "validate", str(bad))
    assert r.rc == 2
    assert f"{bad}:3: dns.colour: unknown key" in r.stderr
    assert "Traceback" not in r.stderr
    r = nexusctl("--json", "config", "validate", str(bad))
    assert r.rc == 2
    doc = r.json
    assert doc["exit_code"] == 2 and "dns.colour" in doc["error"]


def test_cli_wrong_type_from_config_flag(tmp_path):
    bad = write(tmp_path, "interfaces:\n  - name: eth0\n    xdp: maybe-ish\n", "bad.yaml")
    r = nexusctl("-c", str(bad), "status")
    assert r.rc == 2
    assert f"{bad}:3: interfaces[0].xdp:" in r.stderr


def test_packaged_configs_are_valid():
    from nexusctl.paths import configs_dir
    for name in ("nexus.yaml", "lab.yaml"):
        load_config(configs_dir() / name)
