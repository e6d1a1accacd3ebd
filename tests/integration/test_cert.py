"""The certificate observer end to end: nexus_cert.o up with uprobes on the
host's libssl/libcrypto, a real `openssl s_server` on loopback presenting
certificates of a private PKI (with real embedded SCTs from test CT logs), real
OpenSSL clients connecting, the agent judging what the uprobes captured, and
the verdicts in the pinned maps.

Uprobes see every process on the host: the agent here judges only the
processes these tests start (Agent(pids=...)), so kill mode can only ever
act on these tests' certificates."""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from helpers.cli import nexusctl
from helpers.pki import NOW, Pki, openssl_fingerprint, weak_rsa_key, write_json
from helpers.tls import openssl_client, python_client, tls_server
from nexusctl.app import App
from nexusctl.ops import cert as cert_ops
from nexusctl.tools import libbpf as L
from nexusctl.tools.btf import Layout, kernel_btf

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 20                     # bounded wait for the agent to see a process's chain
CONTRACT_FIELDS = ("time", "pid", "comm", "sni", "sha256", "subject", "issuer", "not_before", "not_after", "flags",
                   "threat_level", "scts", "verdict")


@dataclass
class Host:
    dir: Path
    config: Path
    pin_root: Path
    state_dir: Path
    pki: Pki
    base: dict
    revoked: object

    def write_config(self, **over) -> None:
        cert = {**self.base["cert"], **over.get("cert", {})}
        ctc = {**self.base["ct"], **over.get("ct", {})}
        doc = {**{k: v for k, v in self.base.items() if k not in ("cert", "ct")}, "cert": cert, "ct": ctc}
        self.config.write_text(json.dumps(doc))

    def nexusctl(self, *args):
        return nexusctl("-c", str(self.config), *args)


@pytest.fixture(scope="module")
def host(built):
    lab = os.environ["NEXUS_LAB_ID"]
    d = Path(f"/tmp/nexus-cert-{lab}")
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(mode=0o700)
    pki = Pki()
    revoked = pki.issue(["revoked.lab.test"])
    (d / "revoked.txt").write_text(f"sha256:{revoked.sha256}\n")
    base = {"pin_root": f"/sys/fs/bpf/nexus-cert-{lab}", "state_dir": f"/run/nexus-cert-{lab}",
            "build_dir": str(ROOT / "build"),
            "cert": {"enabled": True, "trust_store": str(pki.write_trust_store(d / "roots.pem")),
                     "revocation": str(d / "revoked.txt"), "events_keep": 1000},
            "ct": {"log_list": str(write_json(d / "logs.json", pki.log_list())), "min_scts": 2,
                   "min_operators": 2, "enforce": "audit"}}
    h = Host(d, d / "nexus.yaml", Path(base["pin_root"]), Path(base["state_dir"]), pki, base, revoked)
    h.write_config()
    try:
        r = h.nexusctl("--json", "up")
        assert r.rc == 0, r.stderr
        yield h
    finally:
        h.nexusctl("down")
        shutil.rmtree(h.state_dir, ignore_errors=True)
        if h.pin_root.exists():
            shutil.rmtree(h.pin_root, ignore_errors=True)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def agent(host):
    app = App(config_path=host.config, json=True)
    a = cert_ops.Agent(app, pids=set())
    try:
        yield a
    finally:
        a.close()


def judge(agent, pid: int, n: int = 1) -> list[dict]:
    """Step the agent until it has judged `n` chains of `pid` (bounded wait)."""
    agent.pids.add(pid)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        agent.step(200)
        got = [e for e in agent.events if e["pid"] == pid]
        if len(got) >= n:
            return got
    agent.flush(force=True)
    got = [e for e in agent.events if e["pid"] == pid]
    assert len(got) >= n, f"the agent judged {len(got)} chain(s) of pid {pid}, expected {n}; stats {agent.stats}"
    return got


def map_entry(host, name: str, key: bytes) -> dict | None:
    with L.MapHandle.pinned(str(host.pin_root / "maps" / name)) as m:
        raw = m.lookup(key)
        if raw is None:
            return None
        info = m.info
        return Layout(kernel_btf(info["btf_id"]), info["btf_value_type_id"], enum_names=True).unpack(raw)


def flag_bits(host) -> dict[str, int]:
    with L.MapHandle.pinned(str(host.pin_root / "maps" / "cert_threat_cache")) as m:
        return {k.removeprefix("NEXUS_CERT_F_"): v
                for k, v in kernel_btf(m.info["btf_id"]).enum("nexus_cert_flag").items()}


# ---------------------------------------------------------------- attachments

def test_status_shows_the_uprobes(host):
    st = host.nexusctl("--json", "status")
    assert st.rc == 0, st.stderr
    progs = {p["name"]: p for p in st.json["programs"]}
    d2i = progs["cert_d2i"]["attachments"]
    assert [a["kind"] for a in d2i] == ["uprobe"] and d2i[0]["target"].endswith("libcrypto.so.3:d2i_X509")
    enter = {a["target"].rsplit(":", 1)[1] for a in progs["cert_tls_enter"]["attachments"]}
    assert {"SSL_do_handshake", "SSL_connect", "SSL_read_ex", "SSL_write_ex"} <= enter
    ret = [a["target"] for a in progs["cert_tls_exit"]["attachments"]]
    assert ret and all(t.endswith("(return)") for t in ret)
    again = host.nexusctl("--json", "up")
    assert again.rc == 0 and again.json["changed"] is False


# ---------------------------------------------------------------- each kind of certificate

def _issue(host, kind: str):
    p = host.pki
    if kind == "good":
        return p.issue(["good.lab.test"]), "good.lab.test"
    if kind == "wrong-sni":
        return p.issue(["good.lab.test"]), "other.lab.test"
    if kind == "self-signed":
        return p.issue(["self.lab.test"], self_signed=True, sct_logs=[]), "self.lab.test"
    if kind == "expired":
        return p.issue(["old.lab.test"], not_before=NOW - timedelta(days=100)), "old.lab.test"
    if kind == "weak-key":
        return p.issue(["weak.lab.test"], key=weak_rsa_key()), "weak.lab.test"
    if kind == "revoked":
        return host.revoked, "revoked.lab.test"
    if kind == "bad-scts":
        return p.issue(["good.lab.test"], sct_logs=[p.logs[0], p.unlisted_log], rogue_sct_for=[p.logs[1]]), \
            "good.lab.test"
    if kind == "dga":
        return p.issue(["qx7rz9kpw2vnm4.test"]), "qx7rz9kpw2vnm4.test"
    raise ValueError(kind)


CASES = {
    # kind: (flags, (embedded, valid, invalid, unknown), verdict)
    "good": ([], (2, 2, 0, 0), "allow"),
    "wrong-sni": (["DOMAIN_MISMATCH"], (2, 2, 0, 0), "warn"),
    "self-signed": (["UNKNOWN_CA", "SELF_SIGNED", "NO_CT_LOGS"], (0, 0, 0, 0), "block"),
    "expired": (["EXPIRED"], (2, 2, 0, 0), "warn"),
    "weak-key": (["WEAK_KEY"], (2, 2, 0, 0), "warn"),
    "revoked": (["REVOKED"], (2, 2, 0, 0), "block"),
    "bad-scts": (["NO_CT_LOGS"], (3, 1, 1, 1), "allow"),
    "dga": (["DGA_DOMAIN"], (2, 2, 0, 0), "allow"),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_served_certificate_is_captured_and_judged(host, agent, kind):
    flags, counts, verdict = CASES[kind]
    issued, sni = _issue(host, kind)
    files = issued.write(host.dir / kind, "leaf")
    weak = kind == "weak-key"
    with tls_server(files, weak=weak) as port:
        client = openssl_client(port, sni, weak=weak)
    assert client.returncode == 0, client.stdout[-2000:]
    ev = judge(agent, client.pid)[0]

    assert ev["sha256"] == openssl_fingerprint(files["cert"]) == issued.sha256
    assert ev["flags"] == flags
    s = ev["scts"]
    assert (s["embedded"], s["valid"], s["invalid"], s["unknown"]) == counts
    assert ev["verdict"] == verdict
    assert ev["sni"] == sni and ev["comm"] == "openssl" and ev["pid"] == client.pid
    assert ev["chain_length"] == 1 + len(issued.chain)
    assert ev["chain"][1:] == [openssl_fingerprint(files["chain"])] if issued.chain else ev["chain"] == [issued.sha256]
    assert all(k in ev for k in CONTRACT_FIELDS)

    # the verdict in the pinned maps, by SHA-256 and by the in-kernel key
    sha = bytes.fromhex(issued.sha256)
    bits = flag_bits(host)
    v = map_entry(host, "cert_threat_cache", sha)
    assert v is not None
    assert v["verdict"] == f"NEXUS_CERT_{verdict.upper()}"
    assert v["flags"] == sum(bits[f] for f in flags)
    assert v["threat_level"] == ev["threat_level"] and v["sha256"] == sha
    assert v["key"] == int(ev["kernel_key"], 16)
    by_key = map_entry(host, "cert_verdicts", int(ev["kernel_key"], 16).to_bytes(8, "little"))
    assert by_key["sha256"] == sha and by_key["verdict"] == v["verdict"]
    c = map_entry(host, "ct_log_entries", sha)
    assert (c["embedded"], c["valid"], c["invalid"], c["unknown"]) == counts
    assert c["compliant"] == (0 if "NO_CT_LOGS" in flags else 1)


# ---------------------------------------------------------------- the kernel side in detail

def test_python_client_sni_dedup_and_per_process_count(host, agent):
    issued = host.pki.issue(["py.lab.test"])
    files = issued.write(host.dir / "py", "leaf")
    before = agent.counters()
    repeats = agent.stats["repeats"]
    with tls_server(files, accepts=2) as port:
        client = python_client(port, "py.lab.test", times=2)
    assert client.returncode == 0, client.stdout
    ev = judge(agent, client.pid)[0]
    assert ev["sni"] == "py.lab.test" and ev["sha256"] == issued.sha256 and ev["flags"] == []
    # The second connection sent the same two certificates again: references, no new event.
    deadline = time.monotonic() + WAIT_S
    while agent.stats["repeats"] == repeats and time.monotonic() < deadline:
        agent.step(200)
    assert agent.stats["repeats"] == repeats + 1
    assert len([e for e in agent.events if e["pid"] == client.pid]) == 1
    after = agent.counters()
    assert after["deduplicated"] - before["deduplicated"] >= 2
    # ssl.create_default_context() parsed the CA bundle with d2i_X509 outside any SSL_* call
    assert after["outside_tls"] - before["outside_tls"] >= 100
    # 2 connections x (leaf + intermediate), counted for this process in the shared map
    procs = map_entry(host, "nexus_procs", client.pid.to_bytes(4, "little"))
    assert procs["cert_validations"] == 4
    assert procs["comm"].rstrip(b"\0").startswith(b"python")
    st = host.nexusctl("--json", "stats")
    assert st.rc == 0, st.stderr
    row = next(p for p in st.json["processes"] if p["pid"] == client.pid)
    assert row["cert_validations"] == 4


def test_kernel_key_is_the_keyed_hash_of_exactly_the_der(host, agent):
    issued = host.pki.issue(["key.lab.test"])
    files = issued.write(host.dir / "key", "leaf")
    with tls_server(files) as port:
        client = openssl_client(port, "key.lab.test")
    ev = judge(agent, client.pid)[0]
    secret = map_entry(host, "cert_secret", b"\0" * 4)
    assert secret["k0"] or secret["k1"]
    der = issued.der
    assert ev["der_len"] == len(der)
    assert int(ev["kernel_key"], 16) == cert_ops.kernel_key(der, len(der), secret["k0"], secret["k1"])


def test_truncated_certificate_is_reported_not_hidden(host, agent):
    host.write_config(cert={"max_der": 256})
    try:
        r = host.nexusctl("--json", "apply")
        assert r.rc == 0, r.stderr
        issued = host.pki.issue(["big.lab.test"])
        files = issued.write(host.dir / "big", "leaf")
        before = agent.counters()["truncated"]
        with tls_server(files) as port:
            client = openssl_client(port, "big.lab.test")
        ev = judge(agent, client.pid)[0]
        assert ev["sha256"] is None and ev["verdict"] == "unknown"
        assert f"of {len(issued.der)} DER bytes were captured" in ev["error"]
        assert agent.counters()["truncated"] > before
    finally:
        host.write_config()
        assert host.nexusctl("apply").rc == 0


def test_kill_mode_lets_the_first_sighting_through_then_kills(host, agent):
    bad, sni = _issue(host, "self-signed")
    good = host.pki.issue(["fine.lab.test"])
    bad_files = bad.write(host.dir / "kill-bad", "leaf")
    good_files = good.write(host.dir / "kill-good", "leaf")
    host.write_config(ct={"enforce": "kill"})
    try:
        r = host.nexusctl("--json", "apply")
        assert r.rc == 0, r.stderr
        with tls_server(bad_files, accepts=2) as port:
            first = openssl_client(port, sni)
            assert first.returncode == 0                      # first sighting: judged in user space
            assert judge(agent, first.pid)[0]["verdict"] == "block"
            second = openssl_client(port, sni)
        assert second.returncode == -9                        # SIGKILL from the uprobe
        ev = judge(agent, second.pid)[0]
        assert ev["killed"] is True and ev["kernel_verdict"] == "block" and ev["enforce"] == "kill"
        with tls_server(good_files, accepts=2) as port:
            ok1 = openssl_client(port, "fine.lab.test")
            assert judge(agent, ok1.pid)[0]["verdict"] == "allow"
            ok2 = openssl_client(port, "fine.lab.test")
        assert (ok1.returncode, ok2.returncode) == (0, 0)
        assert agent.counters()["killed"] >= 1
    finally:
        host.write_config()
        assert host.nexusctl("apply").rc == 0
    # back in audit mode the same certificate is only recorded
    with tls_server(bad_files) as port:
        third = openssl_client(port, sni)
    assert third.returncode == 0


def test_probe_io_off_still_sees_explicit_handshakes(host, agent):
    host.write_config(cert={"probe_io": False})
    try:
        r = host.nexusctl("--json", "apply")
        assert r.rc == 0, r.stderr
        st = host.nexusctl("--json", "status").json
        enter = {a["target"].rsplit(":", 1)[1] for p in st["programs"] if p["name"] == "cert_tls_enter"
                 for a in p["attachments"]}
        assert enter == {"SSL_do_handshake", "SSL_connect", "SSL_accept"}
        issued = host.pki.issue(["io.lab.test"])
        files = issued.write(host.dir / "io", "leaf")
        # Python's ssl calls SSL_do_handshake; (openssl s_client handshakes inside
        # SSL_read/SSL_write and is only seen with probe_io on).
        with tls_server(files) as port:
            c = python_client(port, "io.lab.test")
        ev = judge(agent, c.pid)[0]
        assert ev["sha256"] == issued.sha256 and ev["sni"] == "io.lab.test" and ev["flags"] == []
    finally:
        host.write_config()
        assert host.nexusctl("apply").rc == 0


# ---------------------------------------------------------------- the CLI

def test_cert_events_lists_the_verdicts(host, agent):
    issued = host.pki.issue(["events.lab.test"])
    files = issued.write(host.dir / "events", "leaf")
    with tls_server(files) as port:
        client = openssl_client(port, "events.lab.test")
    judge(agent, client.pid)
    r = host.nexusctl("--json", "cert", "events", "--pid", str(client.pid))
    assert r.rc == 0, r.stderr
    rows = r.json
    assert isinstance(rows, list) and len(rows) == 1
    assert rows[0]["sha256"] == issued.sha256 and all(k in rows[0] for k in CONTRACT_FIELDS)
    assert set(rows[0]["scts"]) >= {"embedded", "valid"}


def test_cert_watch_command_prints_one_json_document(host, agent):
    issued = host.pki.issue(["watch.lab.test"])
    files = issued.write(host.dir / "watch", "leaf")
    with tls_server(files) as port:
        client = openssl_client(port, "watch.lab.test")
    # the records wait in the ring buffer for the next consumer: the CLI agent
    r = host.nexusctl("--json", "cert", "watch", "--pid", str(client.pid), "--max-events", "1", "--duration", "30")
    assert r.rc == 0, r.stderr
    doc = r.json
    assert doc["stats"]["events"] == 1 and doc["changed"] is True
    ev = doc["events"][0]
    assert ev["pid"] == client.pid and ev["sha256"] == issued.sha256 and ev["flags"] == []
    assert doc["counters"]["seen"] >= 2


def test_down_removes_links_and_pins(host, agent):
    agent.close()
    r = host.nexusctl("--json", "down")
    assert r.rc == 0, r.stderr
    assert not host.pin_root.exists()
    st = host.nexusctl("--json", "status")
    assert st.json["programs"] == []
