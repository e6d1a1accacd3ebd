"""Certificate Transparency: the log list (Chrome/Google v3 JSON) and RFC 6962
verification of the SCTs embedded in a certificate.

An embedded SCT is the log's signature over the precertificate entry:

    version (1 byte, 0) ‖ signature_type (1 byte, 0 = certificate_timestamp)
    ‖ timestamp (8 bytes, ms) ‖ entry_type (2 bytes, 1 = precert_entry)
    ‖ SHA-256 of the issuer's SubjectPublicKeyInfo (32 bytes)
    ‖ TBS length (3 bytes) ‖ TBS without the SCT extension ‖ extensions length (2 bytes) ‖ extensions

The TBS is `cert.tbs_precertificate_bytes`; the issuer is the certificate
that signed the leaf (from the captured chain or the trust store).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
LONG_LIVED = timedelta(days=180)      # Chrome: up to 180 days needs 2 SCTs, beyond 3
USABLE_STATES = ("qualified", "usable", "readonly")
KNOWN_STATES = USABLE_STATES + ("pending", "retired", "rejected")
SCT_VERSION_V1 = 0
SIGNATURE_TYPE_CERTIFICATE_TIMESTAMP = 0
ENTRY_TYPE_PRECERT = 1

# Per-SCT statuses and the count each one adds to.
STATUS_COUNT = {
    "valid": "valid",
    "invalid_signature": "invalid",
    "future_timestamp": "invalid",
    "unsupported_algorithm": "invalid",
    "unknown_log": "unknown",
    "no_issuer": "unusable",
    "log_not_usable": "unusable",
    "outside_interval": "unusable",
}


class LogListError(ValueError):
    """A log list that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class CtLog:
    log_id: bytes                       # SHA-256 of the log's DER public key
    key_der: bytes
    description: str
    operator: str
    url: str
    state: str | None                   # one of KNOWN_STATES, None when the list gives none
    state_since: datetime | None
    interval: tuple[datetime, datetime] | None   # temporal_interval: certificates expiring in it
    mmd: int | None
    tiled: bool

    @property
    def key(self):
        return serialization.load_der_public_key(self.key_der)

    @property
    def key_type(self) -> str:
        k = self.key
        if isinstance(k, ec.EllipticCurvePublicKey):
            return f"ecdsa-{k.curve.name}"
        if isinstance(k, rsa.RSAPublicKey):
            return f"rsa-{k.key_size}"
        return type(k).__name__

    def counts_at(self, sct_time: datetime) -> bool:
        """Does an SCT this log issued at sct_time count (Chrome's rule)?"""
        if self.state is None or self.state in USABLE_STATES:
            return True
        if self.state == "retired":
            return self.state_since is not None and sct_time < self.state_since
        return False

    def to_json(self) -> dict:
        return {"operator": self.operator, "description": self.description,
                "log_id": base64.b64encode(self.log_id).decode(), "log_id_hex": self.log_id.hex(),
                "key_type": self.key_type, "url": self.url, "state": self.state,
                "state_since": iso(self.state_since) if self.state_since else None, "mmd": self.mmd,
                "temporal_interval": ({"start_inclusive": iso(self.interval[0]),
                                       "end_exclusive": iso(self.interval[1])} if self.interval else None),
                "tiled": self.tiled}


@dataclass
class LogList:
    path: str
    version: str | None
    timestamp: str | None
    logs: dict[bytes, CtLog] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def find(self, log_id: bytes) -> CtLog | None:
        return self.logs.get(log_id)

    @property
    def operators(self) -> list[str]:
        return sorted({log.operator for log in self.logs.values()})

    @classmethod
    def load(cls, path: str | Path) -> "LogList":
        p = Path(path)
        try:
            doc = json.loads(p.read_text())
        except FileNotFoundError:
            raise LogListError(f"{p}: no such file") from None
        except PermissionError:
            raise LogListError(f"{p}: permission denied") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LogListError(f"{p}: not JSON ({e})") from None
        return cls.from_json(doc, str(p))

    @classmethod
    def from_json(cls, doc, where: str = "<log list>") -> "LogList":
        if not isinstance(doc, dict) or not isinstance(doc.get("operators"), list):
            raise LogListError(f"{where}: not a v3 log list (no \"operators\" list)")
        out = cls(where, doc.get("version"), doc.get("log_list_timestamp"))
        for oi, op in enumerate(doc["operators"]):
            if not isinstance(op, dict):
                raise LogListError(f"{where}: operators[{oi}] is not an object")
            name = str(op.get("name") or f"operator {oi}")
            for kind in ("logs", "tiled_logs"):
                for li, entry in enumerate(op.get(kind) or []):
                    log = _parse_log(entry, name, kind == "tiled_logs", f"{where}: operators[{oi}].{kind}[{li}]",
                                     out.warnings)
                    if log.log_id in out.logs:
                        out.warnings.append(f"{where}: log {log.description!r} is listed twice")
                    out.logs[log.log_id] = log
        return out


def _parse_time(v, what: str) -> datetime:
    try:
        t = datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    except ValueError:
        raise LogListError(f"{what}: {v!r} is not an RFC 3339 time") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _parse_log(entry, operator: str, tiled: bool, where: str, warnings: list[str]) -> CtLog:
    if not isinstance(entry, dict):
        raise LogListError(f"{where}: not an object")
    try:
        key_der = base64.b64decode(entry["key"], validate=True)
    except KeyError:
        raise LogListError(f"{where}: no \"key\"") from None
    except (binascii.Error, TypeError):
        raise LogListError(f"{where}: \"key\" is not base64") from None
    try:
        serialization.load_der_public_key(key_der)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise LogListError(f"{where}: \"key\" is not a DER public key ({e})") from None
    log_id = hashlib.sha256(key_der).digest()
    desc = str(entry.get("description") or base64.b64encode(log_id).decode())
    if "log_id" in entry:
        try:
            listed = base64.b64decode(entry["log_id"], validate=True)
        except (binascii.Error, TypeError):
            raise LogListError(f"{where}: \"log_id\" is not base64") from None
        if listed != log_id:
            warnings.append(f"{where}: log_id of {desc!r} is not the SHA-256 of its key; the key's hash is used")
    state = since = None
    st = entry.get("state")
    if isinstance(st, dict) and st:
        state = next(iter(st))
        if state not in KNOWN_STATES:
            raise LogListError(f"{where}: unknown state {state!r}")
        ts = (st[state] or {}).get("timestamp")
        since = _parse_time(ts, f"{where}.state.{state}.timestamp") if ts else None
    interval = None
    ti = entry.get("temporal_interval")
    if isinstance(ti, dict):
        interval = (_parse_time(ti.get("start_inclusive"), f"{where}.temporal_interval.start_inclusive"),
                    _parse_time(ti.get("end_exclusive"), f"{where}.temporal_interval.end_exclusive"))
    url = str(entry.get("url") or entry.get("submission_url") or entry.get("monitoring_url") or "")
    mmd = entry.get("mmd")
    return CtLog(log_id, key_der, desc, operator, url, state, since, interval,
                 int(mmd) if isinstance(mmd, int) else None, tiled)


def iso(t: datetime) -> str:
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_ms(t: datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    d = t - EPOCH
    return (d.days * 86400 + d.seconds) * 1000 + d.microseconds // 1000


def spki_sha256(cert: x509.Certificate) -> bytes:
    return hashlib.sha256(cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).digest()


def signed_data(timestamp_ms: int, issuer_key_hash: bytes, tbs: bytes, extensions: bytes = b"") -> bytes:
    """RFC 6962 §3.2 digitally-signed data of a precert_entry SCT."""
    return (struct.pack(">BBQH", SCT_VERSION_V1, SIGNATURE_TYPE_CERTIFICATE_TIMESTAMP, timestamp_ms,
                        ENTRY_TYPE_PRECERT)
            + issuer_key_hash + len(tbs).to_bytes(3, "big") + tbs
            + len(extensions).to_bytes(2, "big") + extensions)


def verify_signature(key, sct, data: bytes) -> str:
    """'valid', 'invalid_signature' or 'unsupported_algorithm'."""
    if not isinstance(sct.signature_hash_algorithm, hashes.SHA256):
        return "unsupported_algorithm"
    alg = getattr(sct.signature_algorithm, "name", str(sct.signature_algorithm))
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            if alg != "ECDSA":
                return "invalid_signature"
            key.verify(sct.signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            if alg != "RSA":
                return "invalid_signature"
            key.verify(sct.signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            return "unsupported_algorithm"
    except InvalidSignature:
        return "invalid_signature"
    except ValueError:               # malformed DER signature
        return "invalid_signature"
    return "valid"


def embedded_scts(cert: x509.Certificate) -> list:
    try:
        ext = cert.extensions.get_extension_for_class(x509.PrecertificateSignedCertificateTimestamps)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value)


@dataclass
class CtPolicy:
    min_scts: int = 2
    min_scts_long: int = 3
    min_operators: int = 2


def evaluate(cert: x509.Certificate, issuer: x509.Certificate | None, logs: LogList | None,
             now: datetime, policy: CtPolicy) -> dict:
    """SCT counts and per-SCT findings for a leaf; `compliant` is None without a log list."""
    scts = embedded_scts(cert)
    out = {"embedded": len(scts), "valid": 0, "invalid": 0, "unknown": 0, "unusable": 0, "operators": 0,
           "required": None, "compliant": None, "logs": []}
    not_before = _utc(cert.not_valid_before_utc)
    not_after = _utc(cert.not_valid_after_utc)
    out["required"] = policy.min_scts_long if not_after - not_before > LONG_LIVED else policy.min_scts
    tbs = cert.tbs_precertificate_bytes if scts else b""
    key_hash = spki_sha256(issuer) if issuer is not None else None
    valid_logs: dict[bytes, CtLog] = {}
    earliest = None
    for sct in scts:
        ts = _utc(sct.timestamp)
        row = {"log_id": base64.b64encode(sct.log_id).decode(), "log": None, "operator": None,
               "timestamp": iso(ts), "status": None}
        log = logs.find(sct.log_id) if logs is not None else None
        if log is None:
            status = "unknown_log"
        else:
            row["log"], row["operator"] = log.description, log.operator
            if key_hash is None:
                status = "no_issuer"
            else:
                status = verify_signature(log.key, sct, signed_data(to_ms(ts), key_hash, tbs,
                                                                     sct.extension_bytes))
            if status == "valid":
                if ts > now:
                    status = "future_timestamp"
                elif not log.counts_at(ts):
                    status = "log_not_usable"
                elif log.interval and not (log.interval[0] <= not_after < log.interval[1]):
                    status = "outside_interval"
        row["status"] = status
        out[STATUS_COUNT[status]] += 1
        if status == "valid":
            valid_logs[log.log_id] = log
            earliest = ts if earliest is None or ts < earliest else earliest
        out["logs"].append(row)
    out["valid_logs"] = len(valid_logs)
    out["operators"] = len({log.operator for log in valid_logs.values()})
    out["earliest_ms"] = to_ms(earliest) if earliest else 0
    out["valid_log_ids"] = list(valid_logs)
    if logs is not None:
        out["compliant"] = len(valid_logs) >= out["required"] and out["operators"] >= policy.min_operators
    return out


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)
