"""Certificate analysis without a kernel: flags, SCT verification against a
test log list, threat level and verdict, log list parsing, revocation files,
and `cert verify` run as an unprivileged user."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from helpers.pki import NOW, Pki, TestLog, precert_signed_data, weak_rsa_key, write_json
from nexusctl.certs import analyze, ct
from nexusctl.ops.cert import kernel_key

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pki():
    return Pki()


@pytest.fixture(scope="module")
def files(pki, tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    return {"trust": pki.write_trust_store(d / "roots.pem"), "logs": write_json(d / "logs.json", pki.log_list()),
            "dir": d}


def _analyzer(files, **kw) -> analyze.Analyzer:
    return analyze.Analyzer(analyze.Settings(trust_store=files["trust"], log_list=files["logs"], **kw))


def _der(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.DER)


def _judge(a, issued, sni):
    return a.analyze([issued.der] + [_der(c) for c in issued.chain], sni)


CASES = [
    # (id, issue kwargs, sni, flags, (embedded, valid, invalid, unknown), verdict)
    ("good", {}, "good.lab.test", [], (2, 2, 0, 0), "allow"),
    ("wrong-sni", {}, "other.lab.test", ["DOMAIN_MISMATCH"], (2, 2, 0, 0), "warn"),
    ("self-signed", {"self_signed": True, "sct_logs": []}, "good.lab.test",
     ["UNKNOWN_CA", "SELF_SIGNED", "NO_CT_LOGS"], (0, 0, 0, 0), "block"),
    ("expired", {"not_before": NOW - timedelta(days=100)}, "good.lab.test", ["EXPIRED"], (2, 2, 0, 0), "warn"),
    ("not-yet-valid", {"not_before": NOW + timedelta(days=2)}, "good.lab.test", ["EXPIRED", "NO_CT_LOGS"],
     (2, 0, 2, 0), "warn"),        # its SCTs are from the future: invalid
    ("short", {"days": 1}, "good.lab.test", ["SHORT_VALIDITY"], (2, 2, 0, 0), "allow"),
    ("one-sct", {"sct_logs": "first"}, "good.lab.test", ["NO_CT_LOGS"], (1, 1, 0, 0), "allow"),
    ("rogue-and-unlisted", {"sct_logs": "first+unlisted", "rogue": True}, "good.lab.test", ["NO_CT_LOGS"],
     (3, 1, 1, 1), "allow"),
    ("dga", {"names": ["qx7rz9kpw2vnm4.test"]}, "qx7rz9kpw2vnm4.test", ["DGA_DOMAIN"], (2, 2, 0, 0), "allow"),
    ("wildcard-psl", {"names": ["*.co.uk"]}, "a.co.uk", ["WILDCARD_ABUSE"], (2, 2, 0, 0), "warn"),
    ("wildcard-tld", {"names": ["*.test"]}, "a.test", ["WILDCARD_ABUSE"], (2, 2, 0, 0), "warn"),
    ("wildcard-ok", {"names": ["*.lab.test"]}, "a.lab.test", [], (2, 2, 0, 0), "allow"),
    ("wildcard-two-levels", {"names": ["*.lab.test"]}, "a.b.lab.test", ["DOMAIN_MISMATCH"], (2, 2, 0, 0), "warn"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_flags_scts_and_verdict(pki, files, case):
    _, kw, sni, flags, counts, verdict = case
    kw = dict(kw)
    names = kw.pop("names", ["good.lab.test"])
    logs = kw.pop("sct_logs", None)
    if logs == "first":
        kw["sct_logs"] = [pki.logs[0]]
    elif logs == "first+unlisted":
        kw["sct_logs"] = [pki.logs[0], pki.unlisted_log]
    elif logs is not None:
        kw["sct_logs"] = logs
    if kw.pop("rogue", False):
        kw["rogue_sct_for"] = [pki.logs[1]]
    issued = pki.issue(names, **kw)
    res = _judge(_analyzer(files), issued, sni)
    assert res["error"] is None
    assert res["sha256"] == hashlib.sha256(issued.der).hexdigest()
    assert res["flags"] == flags
    s = res["scts"]
    assert (s["embedded"], s["valid"], s["invalid"], s["unknown"]) == counts
    assert res["verdict"] == verdict
    assert res["threat_level"] == min(100, sum(analyze.CERT_WEIGHTS[f] for f in flags))


def test_weak_key(pki, files):
    res = _judge(_analyzer(files), pki.issue(["good.lab.test"], key=weak_rsa_key()), "good.lab.test")
    assert res["flags"] == ["WEAK_KEY"]
    assert res["key"] == {"type": "rsa", "bits": 1024}


def test_sct_statuses_name_each_log(pki, files):
    issued = pki.issue(["good.lab.test"], sct_logs=[pki.logs[0], pki.unlisted_log], rogue_sct_for=[pki.logs[1]])
    rows = _judge(_analyzer(files), issued, "good.lab.test")["scts"]["logs"]
    by_status = {r["status"]: r for r in rows}
    assert set(by_status) == {"valid", "unknown_log", "invalid_signature"}
    assert by_status["valid"]["log"] == "nexus-test-log-a" and by_status["valid"]["operator"] == "Operator A"
    assert by_status["invalid_signature"]["log"] == "nexus-test-log-b"
    assert by_status["unknown_log"]["log"] is None


def test_signed_data_matches_rfc6962_layout(pki):
    issued = pki.issue(["good.lab.test"])
    sct = ct.embedded_scts(issued.cert)[0]
    ikh = ct.spki_sha256(pki.inter)
    tbs = issued.cert.tbs_precertificate_bytes
    mine = ct.signed_data(ct.to_ms(sct.timestamp), ikh, tbs, sct.extension_bytes)
    assert mine == precert_signed_data(ct.to_ms(sct.timestamp), ikh, tbs)
    assert len(mine) == 1 + 1 + 8 + 2 + 32 + 3 + len(tbs) + 2


def test_without_issuer_scts_are_unusable_and_ca_unknown(pki, files):
    issued = pki.issue(["good.lab.test"])
    res = _analyzer(files).analyze([issued.der], "good.lab.test")      # intermediate not sent
    assert res["flags"] == ["UNKNOWN_CA", "NO_CT_LOGS"]
    assert res["scts"]["unusable"] == 2 and {r["status"] for r in res["scts"]["logs"]} == {"no_issuer"}


def test_intermediate_in_trust_store_is_enough(pki, files, tmp_path):
    store = tmp_path / "store.pem"
    store.write_bytes(pki.inter.public_bytes(serialization.Encoding.PEM))
    issued = pki.issue(["good.lab.test"])
    a = analyze.Analyzer(analyze.Settings(trust_store=store, log_list=files["logs"]))
    res = a.analyze([issued.der], "good.lab.test")
    assert res["flags"] == [] and res["scts"]["valid"] == 2
    assert res["trusted_by"].startswith("O=nexus tests,CN=nexus test intermediate") or "intermediate" in res["trusted_by"]


def test_without_log_list_scts_are_counted_not_judged(pki, files):
    a = analyze.Analyzer(analyze.Settings(trust_store=files["trust"], log_list=None))
    res = _judge(a, pki.issue(["good.lab.test"], sct_logs=[]), "good.lab.test")
    assert res["flags"] == [] and res["scts"]["compliant"] is None
    assert any("ct.log_list is not set" in w for w in a.warnings)


def test_revocation_by_fingerprint_serial_and_crl(pki, files, tmp_path):
    by_fp = pki.issue(["good.lab.test"])
    by_serial = pki.issue(["good.lab.test"], serial=0x1234ABCD)
    untouched = pki.issue(["good.lab.test"])
    text = tmp_path / "revoked.txt"
    text.write_text(f"# revoked by hand\nsha256:{by_fp.sha256.upper()}\nserial:1234abcd  # the second\n")
    a = _analyzer(files, revocation=text)
    assert _judge(a, by_fp, "good.lab.test")["flags"] == ["REVOKED"]
    assert _judge(a, by_serial, "good.lab.test")["revoked_by"] == "serial"
    assert _judge(a, untouched, "good.lab.test")["flags"] == []
    # a CRL from the intermediate
    crl = (x509.CertificateRevocationListBuilder().issuer_name(pki.inter.subject)
           .last_update(NOW).next_update(NOW + timedelta(days=1))
           .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(untouched.cert.serial_number)
                                    .revocation_date(NOW).build())
           .sign(pki.inter_key, hashes.SHA256()))
    crl_file = tmp_path / "inter.crl"
    crl_file.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    a = _analyzer(files, revocation=crl_file)
    res = _judge(a, untouched, "good.lab.test")
    assert res["flags"] == ["REVOKED"] and res["revoked_by"] == "crl"
    assert _judge(a, by_fp, "good.lab.test")["flags"] == []


def test_bad_revocation_line_names_file_and_line(files, tmp_path):
    bad = tmp_path / "revoked.txt"
    bad.write_text("sha256:" + "ab" * 32 + "\nnot a fingerprint\n")
    with pytest.raises(analyze.CertFileError, match=r"revoked.txt:2:"):
        _analyzer(files, revocation=bad)


def test_unparseable_certificate_is_a_finding(files):
    junk = bytes.fromhex("3003020101")            # a DER SEQUENCE, not a certificate
    res = _analyzer(files).analyze([junk], "x.test")
    assert res["sha256"] == hashlib.sha256(junk).hexdigest()
    assert res["error"].startswith("the certificate could not be parsed")
    assert res["verdict"] == "warn"


def test_thresholds_and_weights_from_config(pki, files):
    a = _analyzer(files, weights={**analyze.CERT_WEIGHTS, "DOMAIN_MISMATCH": 90}, block=85)
    res = _judge(a, pki.issue(["good.lab.test"]), "other.lab.test")
    assert (res["threat_level"], res["verdict"]) == (90, "block")


def test_chrome_policy_long_lived_needs_three(pki, files):
    res = _judge(_analyzer(files), pki.issue(["good.lab.test"], days=365), "good.lab.test")
    assert res["scts"]["required"] == 3 and res["flags"] == ["NO_CT_LOGS"]


# ---------------------------------------------------------------- log lists

def _entry(log: TestLog, **extra) -> dict:
    return {**log.entry(), **extra}


def test_log_list_states_intervals_and_tiled_logs(pki, tmp_path):
    retired_early = TestLog("retired-early", "Op R")
    retired_late = TestLog("retired-late", "Op R2")
    pending = TestLog("pending", "Op P")
    sharded = TestLog("sharded-2020", "Op S")
    tiled = TestLog("tiled", "Op T")
    doc = {"version": "x", "operators": [
        {"name": "Op R", "logs": [_entry(retired_early, state={"retired": {"timestamp": "2021-01-01T00:00:00Z"}})]},
        {"name": "Op R2", "logs": [_entry(retired_late, state={"retired": {"timestamp": "2999-01-01T00:00:00Z"}})]},
        {"name": "Op P", "logs": [_entry(pending, state={"pending": {"timestamp": "2021-01-01T00:00:00Z"}})]},
        {"name": "Op S", "logs": [_entry(sharded, temporal_interval={"start_inclusive": "2020-01-01T00:00:00Z",
                                                                     "end_exclusive": "2021-01-01T00:00:00Z"})]},
        {"name": "Op T", "logs": [], "tiled_logs": [_entry(tiled)]},
    ]}
    store = pki.write_trust_store(tmp_path / "roots.pem")
    ll = write_json(tmp_path / "ll.json", doc)
    a = analyze.Analyzer(analyze.Settings(trust_store=store, log_list=ll,
                                          policy=ct.CtPolicy(min_scts=1, min_scts_long=1, min_operators=1)))
    issued = pki.issue(["good.lab.test"], sct_logs=[retired_early, retired_late, pending, sharded, tiled])
    rows = {r["log"]: r["status"] for r in _judge(a, issued, "good.lab.test")["scts"]["logs"]}
    assert rows == {"retired-early": "log_not_usable", "retired-late": "valid", "pending": "log_not_usable",
                    "sharded-2020": "outside_interval", "tiled": "valid"}
    logs = ct.LogList.load(ll)
    assert logs.find(tiled.log_id).tiled and logs.operators == ["Op P", "Op R", "Op R2", "Op S", "Op T"]


def test_log_list_errors_name_the_file(tmp_path):
    bad = tmp_path / "ll.json"
    bad.write_text("{not json")
    with pytest.raises(ct.LogListError, match="ll.json: not JSON"):
        ct.LogList.load(bad)
    bad.write_text(json.dumps({"operators": [{"name": "x", "logs": [{"key": "%%%"}]}]}))
    with pytest.raises(ct.LogListError, match=r"operators\[0\].logs\[0\]: \"key\" is not base64"):
        ct.LogList.load(bad)
    with pytest.raises(ct.LogListError, match="no such file"):
        ct.LogList.load(tmp_path / "missing.json")


def test_log_id_mismatch_is_a_warning_and_the_key_hash_wins(tmp_path):
    log = TestLog("l", "o")
    doc = {"operators": [{"name": "o", "logs": [_entry(log, log_id="AAAA")]}]}
    ll = ct.LogList.from_json(doc, "x.json")
    assert ll.find(log.log_id) is not None and "not the SHA-256 of its key" in ll.warnings[0]


# ---------------------------------------------------------------- the in-kernel key, in Python

def test_kernel_key_reference_is_keyed_and_length_bound():
    der = bytes(range(256)) * 3 + b"\x01\x02\x03"
    k = kernel_key(der, len(der), 1, 2)
    assert k != kernel_key(der, len(der), 1, 3)                 # the key matters
    assert k != kernel_key(der, len(der) + 1, 1, 2)             # so does the full length
    assert k != kernel_key(der[:-1] + b"\x04", len(der), 1, 2)  # and every byte, the last one too
    assert 0 <= k < 2 ** 64


def test_siphash_core_matches_the_reference_vector():
    """SipHash-2-4 of the empty message with key 00..0f is 0x726fdb47dd0e0e31 (the
    paper's test vectors); kernel_key of an empty DER with der_len 0 is exactly that,
    because its final word (0 << 32 | 0) equals SipHash's final block for length 0."""
    k0 = int.from_bytes(bytes(range(8)), "little")
    k1 = int.from_bytes(bytes(range(8, 16)), "little")
    assert kernel_key(b"", 0, k0, k1) == 0x726fdb47dd0e0e31


# ---------------------------------------------------------------- the CLI, without root

@pytest.fixture
def world_readable(pki, tmp_path_factory):
    d = Path(tempfile.mkdtemp(prefix="nexus-cert-verify-"))
    try:
        os.chmod(d, 0o755)
        issued = pki.issue(["good.lab.test"])
        paths = issued.write(d, "leaf")
        (d / "full.pem").write_bytes(paths["cert"].read_bytes() + paths["chain"].read_bytes())
        pki.write_trust_store(d / "roots.pem")
        write_json(d / "logs.json", pki.log_list())
        (d / "nexus.yaml").write_text(f"cert:\n  trust_store: {d / 'roots.pem'}\nct:\n  log_list: {d / 'logs.json'}\n")
        for f in d.iterdir():
            os.chmod(f, 0o644)
        yield d, issued
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _as_nobody() -> list[str]:
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("setpriv missing")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


def test_cert_verify_works_without_root(world_readable):
    d, issued = world_readable
    argv = [*_as_nobody(), sys.executable, "-m", "nexusctl", "-c", str(d / "nexus.yaml"), "--json", "cert", "verify",
            str(d / "full.pem"), "--sni", "good.lab.test"]
    p = subprocess.run(argv, capture_output=True, text=True, cwd=str(d), timeout=60,
                       env={**os.environ, "HOME": str(d), "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["sha256"] == issued.sha256 and out["flags"] == [] and out["verdict"] == "allow"
    assert out["scts"]["embedded"] == 2 and out["scts"]["valid"] == 2
    for k in ("time", "pid", "comm", "sni", "sha256", "subject", "issuer", "not_before", "not_after", "flags",
              "threat_level", "scts", "verdict"):
        assert k in out


def test_cert_verify_fail_on_and_bad_file(world_readable):
    d, _ = world_readable
    base = [sys.executable, "-m", "nexusctl", "-c", str(d / "nexus.yaml"), "cert", "verify"]
    p = subprocess.run([*base, str(d / "full.pem"), "--sni", "nope.test", "--fail-on", "warn"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "DOMAIN_MISMATCH" in p.stdout
    (d / "junk.pem").write_text("hello")
    p = subprocess.run([*base, str(d / "junk.pem")], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "no PEM certificate and not DER" in p.stderr


def test_ct_logs_lists_the_log_list(world_readable, pki):
    d, _ = world_readable
    p = subprocess.run([sys.executable, "-m", "nexusctl", "-c", str(d / "nexus.yaml"), "--json", "ct", "logs"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert {x["description"] for x in out["logs"]} == {"nexus-test-log-a", "nexus-test-log-b"}
    assert out["operators"] == ["Operator A", "Operator B"]
    assert {x["key_type"] for x in out["logs"]} == {"ecdsa-secp256r1"}
