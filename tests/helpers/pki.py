"""A private PKI for the certificate tests: a root CA, an intermediate, test
CT logs with their own keys and a v3 log list naming them, and leaf
certificates with real embedded SCTs.

cryptography cannot build an SCT extension from SCT objects, so the
SignedCertificateTimestampList is encoded here (RFC 6962 §3.3, TLS encoding
inside an OCTET STRING) and added as an UnrecognizedExtension. Each SCT is a
real signature by the test log over the precertificate entry: the TBS of
the same certificate without the SCT extension, and the issuer key hash.
"""
from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

SCT_LIST_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
TLS_HASH_SHA256 = 4
TLS_SIG_ECDSA = 3
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def _spki(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def der_octet_string(body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        head = bytes([n])
    else:
        octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
        head = bytes([0x80 | len(octets)]) + octets
    return b"\x04" + head + body


def sct_list_extension_value(scts: list[bytes]) -> bytes:
    body = b"".join(len(s).to_bytes(2, "big") + s for s in scts)
    return der_octet_string(len(body).to_bytes(2, "big") + body)


def precert_signed_data(ts_ms: int, issuer_key_hash: bytes, tbs: bytes, extensions: bytes = b"") -> bytes:
    """Built independently of nexusctl.certs.ct.signed_data, from RFC 6962 §3.2."""
    return (bytes([0, 0]) + ts_ms.to_bytes(8, "big") + (1).to_bytes(2, "big") + issuer_key_hash
            + len(tbs).to_bytes(3, "big") + tbs + len(extensions).to_bytes(2, "big") + extensions)


@dataclass
class TestLog:
    __test__ = False            # not a pytest test class
    description: str
    operator: str
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    @property
    def key_der(self) -> bytes:
        return _spki(self.key.public_key())

    @property
    def log_id(self) -> bytes:
        return hashlib.sha256(self.key_der).digest()

    def sct(self, ts_ms: int, issuer_key_hash: bytes, tbs: bytes, *, signer=None, log_id: bytes | None = None
            ) -> bytes:
        """A TLS-encoded SignedCertificateTimestamp; `signer` signs instead of the log's key."""
        sig = (signer or self.key).sign(precert_signed_data(ts_ms, issuer_key_hash, tbs), ec.ECDSA(hashes.SHA256()))
        return (bytes([0]) + (log_id or self.log_id) + ts_ms.to_bytes(8, "big") + (0).to_bytes(2, "big")
                + bytes([TLS_HASH_SHA256, TLS_SIG_ECDSA]) + len(sig).to_bytes(2, "big") + sig)

    def entry(self) -> dict:
        return {"description": self.description, "log_id": base64.b64encode(self.log_id).decode(),
                "key": base64.b64encode(self.key_der).decode(), "url": f"https://{self.description}.test/",
                "mmd": 86400, "state": {"usable": {"timestamp": "2020-01-01T00:00:00Z"}}}


def log_list(logs: list[TestLog]) -> dict:
    ops: dict[str, list] = {}
    for log in logs:
        ops.setdefault(log.operator, []).append(log.entry())
    return {"version": "test-1", "log_list_timestamp": NOW.isoformat().replace("+00:00", "Z"),
            "operators": [{"name": name, "email": [f"ct@{name.lower().replace(' ', '')}.test"], "logs": entries}
                          for name, entries in ops.items()]}


@dataclass
class Issued:
    cert: x509.Certificate
    key: object
    chain: list[x509.Certificate]               # what the server sends after the leaf

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()

    def write(self, directory: Path, name: str) -> dict[str, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        files = {"cert": directory / f"{name}.pem", "key": directory / f"{name}.key",
                 "chain": directory / f"{name}.chain.pem"}
        files["cert"].write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        files["key"].write_bytes(self.key.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
        files["chain"].write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain))
        return files


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nexus tests")])


class Pki:
    """Root → intermediate → leaves; two test logs of two operators (in the list)
    and one log that is not in the list."""

    def __init__(self):
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = (x509.CertificateBuilder().subject_name(_name("nexus test root")).issuer_name(_name("nexus test root"))
                     .public_key(self.root_key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(NOW - timedelta(days=30)).not_valid_after(NOW + timedelta(days=3650))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                    critical=True)
                     .sign(self.root_key, hashes.SHA256()))
        self.inter_key = ec.generate_private_key(ec.SECP256R1())
        self.inter = (x509.CertificateBuilder().subject_name(_name("nexus test intermediate"))
                      .issuer_name(self.root.subject).public_key(self.inter_key.public_key())
                      .serial_number(x509.random_serial_number())
                      .not_valid_before(NOW - timedelta(days=30)).not_valid_after(NOW + timedelta(days=1825))
                      .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                      .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                     critical=True)
                      .sign(self.root_key, hashes.SHA256()))
        self.logs = [TestLog("nexus-test-log-a", "Operator A"), TestLog("nexus-test-log-b", "Operator B")]
        self.unlisted_log = TestLog("nexus-test-log-unlisted", "Operator C")

    def log_list(self) -> dict:
        return log_list(self.logs)

    def issue(self, names: list[str], *, key=None, days: float = 90, not_before: datetime | None = None,
              sct_logs: list[TestLog] | None = None, rogue_sct_for: list[TestLog] = (),
              self_signed: bool = False, serial: int | None = None) -> Issued:
        """A leaf for `names`. sct_logs sign real SCTs (default: both listed logs);
        rogue_sct_for gets SCTs carrying that log's id but signed by another key."""
        key = key or ec.generate_private_key(ec.SECP256R1())
        nb = not_before or (NOW - timedelta(hours=1))
        subject = _name(names[0])
        issuer_name, issuer_key, issuer_pub = ((subject, key, key.public_key()) if self_signed
                                               else (self.inter.subject, self.inter_key, self.inter_key.public_key()))
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
             .serial_number(serial or x509.random_serial_number())
             .not_valid_before(nb).not_valid_after(nb + timedelta(days=days))
             .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
        logs = self.logs if sct_logs is None else sct_logs
        if not logs and not rogue_sct_for:
            cert = b.sign(issuer_key, hashes.SHA256())
        else:
            tbs = b.sign(issuer_key, hashes.SHA256()).tbs_certificate_bytes
            ikh = hashlib.sha256(_spki(issuer_pub)).digest()
            ts = int((nb + timedelta(minutes=1)).timestamp() * 1000)
            scts = [log.sct(ts, ikh, tbs) for log in logs]
            rogue = ec.generate_private_key(ec.SECP256R1())
            scts += [log.sct(ts, ikh, tbs, signer=rogue) for log in rogue_sct_for]
            cert = b.add_extension(x509.UnrecognizedExtension(SCT_LIST_OID, sct_list_extension_value(scts)),
                                   critical=False).sign(issuer_key, hashes.SHA256())
            assert cert.tbs_precertificate_bytes == tbs, "the precert TBS must be the TBS the logs signed"
        return Issued(cert, key, [] if self_signed else [self.inter])

    def write_trust_store(self, path: Path) -> Path:
        path.write_bytes(self.root.public_bytes(serialization.Encoding.PEM))
        return path


def weak_rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


def openssl_fingerprint(pem: Path) -> str:
    """`openssl x509 -fingerprint -sha256` of a PEM file, as lower-case hex without colons."""
    import subprocess
    out = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", str(pem)],
                         capture_output=True, text=True, check=True).stdout
    return out.strip().split("=", 1)[1].replace(":", "").lower()


def write_json(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc, indent=1))
    return path


__all__ = ["Pki", "TestLog", "Issued", "weak_rsa_key", "openssl_fingerprint", "write_json"]
