"""The certificate observer's config, library discovery and plan (no kernel)."""
from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest

from nexusctl.config import load_config, load_config_text
from nexusctl.engine.links import AttachLink, DetachLink
from nexusctl.engine.kernel import LoadObject, WriteConfigMap
from nexusctl.engine.planner import plan_up
from nexusctl.engine.state import State
from nexusctl.errors import ConfigError, ExitCode, Unsupported
from nexusctl.features import cert as feature

SSL = "/lib/x86_64-linux-gnu/libssl.so.3"
CRYPTO = "/lib/x86_64-linux-gnu/libcrypto.so.3"
need_openssl = pytest.mark.skipif(not (os.path.exists(SSL) and os.path.exists(CRYPTO)),
                                  reason="no OpenSSL 3 at the Debian paths")


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "nexus.yaml"
    p.write_text(textwrap.dedent(text))
    return p


# ---------------------------------------------------------------- config

@pytest.mark.parametrize("text, line, field, words", [
    ("cert:\n  weights:\n    EXPIRD: 10\n", 2, "cert.weights", "is not a flag"),
    ("cert:\n  ring_buffer_kib: 1000\n", 2, "cert.ring_buffer_kib", "power of two"),
    ("ct:\n  enforce: block\n", 2, "ct.enforce", "audit"),
    ("cert:\n  thresholds: {warn: 90, block: 50}\n", 2, "cert.thresholds", "must not exceed"),
    ("cert:\n  max_der: 100000\n", 2, "cert.max_der", "16384"),
    ("cert:\n  libraries: [lib/libssl.so.3]\n", 2, "cert.libraries", "absolute"),
])
def test_bad_cert_config_names_file_line_and_field(tmp_path, text, line, field, words):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.message.startswith(f"{p}:{line}: {field}"), e.value.message
    assert words in e.value.message
    assert e.value.exit_code == ExitCode.USAGE


def test_cert_paths_are_relative_to_the_config(tmp_path):
    p = write(tmp_path, "cert: {trust_store: roots.pem, revocation: revoked.txt}\nct: {log_list: logs.json}\n")
    cfg = load_config(p)
    assert cfg.cert.trust_store == tmp_path / "roots.pem"
    assert cfg.cert.revocation == tmp_path / "revoked.txt"
    assert cfg.ct.log_list == tmp_path / "logs.json"


def test_partial_weights_keep_the_other_defaults():
    cfg = load_config_text("cert: {weights: {NO_CT_LOGS: 0}}\n")
    assert cfg.cert.weights["NO_CT_LOGS"] == 0 and cfg.cert.weights["REVOKED"] == 100


# ---------------------------------------------------------------- libraries

@need_openssl
def test_discovery_probes_each_inode_once_and_classifies_symbols(tmp_path):
    link = tmp_path / "libssl-link.so.3"
    link.symlink_to(SSL)
    cfg = load_config_text(f"cert: {{enabled: true, libraries: ['{SSL}', '{link}', '{CRYPTO}']}}\n")
    libs, notes = feature.discover(cfg)
    assert [lib.path for lib in libs] == [SSL, CRYPTO]        # the symlink is the same inode
    assert "SSL_do_handshake" in libs[0].symbols and "d2i_X509" not in libs[0].symbols
    assert "d2i_X509" in libs[1].symbols and "X509_verify_cert" in libs[1].symbols
    specs = feature.link_specs(libs)
    assert len({s.name for s in specs}) == len(specs)
    d2i = [s for s in specs if s.prog == "cert_d2i"]
    assert [(s.kind, s.uprobe) for s in d2i] == [("uprobe", (CRYPTO, "d2i_X509", False))]
    rets = {s.uprobe[1] for s in specs if s.uprobe[2]}
    assert rets == set(feature.TLS_CALLS) | {"X509_verify_cert"}
    assert all(s.prog == ("cert_tls_exit" if s.uprobe[1] in feature.TLS_CALLS else "cert_vfy_exit")
               for s in specs if s.uprobe[2])


@need_openssl
def test_probe_io_off_leaves_read_and_write_alone():
    cfg = load_config_text(f"cert: {{enabled: true, probe_io: false, libraries: ['{SSL}', '{CRYPTO}']}}\n")
    names = {s.uprobe[1] for s in feature.links(cfg)}
    assert not names & set(feature.IO_CALLS)
    assert {"SSL_do_handshake", "SSL_connect", "SSL_accept", "d2i_X509", "SSL_ctrl"} <= names


@need_openssl
def test_missing_d2i_is_unsupported_with_a_fix(tmp_path):
    junk = tmp_path / "not-elf.so"
    junk.write_text("hello")
    cfg = load_config_text(f"cert: {{enabled: true, libraries: ['{SSL}', '{junk}', '{tmp_path}/none*.so']}}\n")
    with pytest.raises(Unsupported) as e:
        feature.links(cfg)
    assert "d2i_X509" in e.value.message and "not a readable ELF object" in e.value.message
    assert e.value.exit_code == ExitCode.UNSUPPORTED and "cert.libraries" in e.value.hint


@need_openssl
def test_a_copy_is_another_inode_and_is_probed_too(tmp_path):
    copy = tmp_path / "libcrypto.so.3"
    shutil.copy(CRYPTO, copy)
    cfg = load_config_text(f"cert: {{enabled: true, libraries: ['{CRYPTO}', '{tmp_path}/libcrypto*']}}\n")
    libs, _ = feature.discover(cfg)
    assert [lib.path for lib in libs] == [CRYPTO, str(copy)]
    assert libs[0].tag != libs[1].tag


# ---------------------------------------------------------------- plan

@need_openssl
def test_up_plan_loads_configures_keys_then_attaches(tmp_path):
    cfg = load_config_text(f"pin_root: /sys/fs/bpf/nexus-unit\nstate_dir: {tmp_path}/state\n"
                           "cert: {enabled: true, max_der: 4096, dedup_window: 10}\nct: {enforce: kill}\n")
    actions = plan_up(cfg, State.load(cfg.state_dir), build=False)
    loads = [a.spec.name for a in actions if isinstance(a, LoadObject)]
    assert loads == ["nexus_cert"]
    writes = [a for a in actions if isinstance(a, WriteConfigMap)]
    assert [(w.pin.name, w.values) for w in writes] == [
        ("cert_config", {"max_der": 4096, "enforce": 1, "dedup_window_ns": 10_000_000_000})]
    kinds = [a.kind for a in actions]
    secret = next(i for i, a in enumerate(actions) if isinstance(a, feature.EnsureCertSecret))
    first_link = next(i for i, a in enumerate(actions) if isinstance(a, AttachLink))
    assert kinds.index("load") < kinds.index("config-map") <= secret < first_link
    load = next(a for a in actions if isinstance(a, LoadObject))
    assert load.map_sizes["cert_events"] == 1024 * 1024 and load.map_sizes["cert_verdicts"] == 65536


def test_disabling_cert_detaches_its_links(tmp_path):
    cfg = load_config_text(f"pin_root: /sys/fs/bpf/nexus-unit\nstate_dir: {tmp_path}/state\n")
    st = State.load(cfg.state_dir)
    st.data["links"] = {"cert_d2i_X509_abcd1234": {"kind": "uprobe", "target": "x:d2i_X509"}}
    actions = plan_up(cfg, st, build=False)
    assert [a.name for a in actions if isinstance(a, DetachLink)] == ["cert_d2i_X509_abcd1234"]
    assert not any(isinstance(a, LoadObject) for a in actions)


def test_cert_watch_without_the_observer_up_says_how_to_fix(tmp_path):
    from helpers.cli import nexusctl
    p = write(tmp_path, f"pin_root: /sys/fs/bpf/nexus-unit-absent\nstate_dir: {tmp_path}/state\n")
    r = nexusctl("-c", str(p), "--json", "cert", "watch", "--duration", "1")
    assert r.rc == 1
    doc = __import__("json").loads(r.stdout)
    assert "not up" in doc["error"] and "cert.enabled: true" in doc["hint"]
