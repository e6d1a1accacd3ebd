"""Judging a certificate chain: real SHA-256, parsing with `cryptography`,
the flags of CONTRACT.md, a threat level and a verdict.

Pure user space: `cert verify FILE` and the agent (`cert watch`) share it,
so the offline answer for a file is the answer the agent writes to the maps.

Flags (names from CONTRACT.md):
  SHORT_VALIDITY   lifetime (notAfter - notBefore) under cert.thresholds.short_validity_hours
  EXPIRED          now is after notAfter, or before notBefore (not yet valid)
  WEAK_KEY         RSA/DSA under min_rsa_bits, EC under min_ec_bits
  SELF_SIGNED      issuer == subject and the certificate's own key verifies its signature
  WILDCARD_ABUSE   a SAN wildcard at or above a public suffix (`*.com`, `*.co.uk`, a bare
                   `*`), one not in the leftmost label, or a partial one (`f*.example.com`)
  DOMAIN_MISMATCH  the SNI is not covered by the SAN names (the CN only without a SAN)
  UNKNOWN_CA       no path from the leaf through the captured chain to the trust store
  NO_CT_LOGS       CT policy not met: fewer valid SCTs (distinct logs) than ct.min_scts
                   (ct.min_scts_long beyond 180 days) or operators than ct.min_operators;
                   only with a log list (ct.log_list)
  REVOKED          SHA-256 fingerprint or serial listed in cert.revocation
  DGA_DOMAIN       the SNI (or, without SNI, a SAN name) scores at or above dns.dga.threshold
threat_level = min(100, sum of cert.weights of the flags); verdict = block at or
above cert.thresholds.block, warn at or above .warn, allow below.
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from nexusctl.certs import ct
from nexusctl.config.model import CERT_FLAGS, CERT_WEIGHTS
from nexusctl.fsutil import read_input

PEM_CERT_RE = re.compile(rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.S)
PEM_CRL_RE = re.compile(rb"-----BEGIN X509 CRL-----\s*(.+?)\s*-----END X509 CRL-----", re.S)
MAX_CHAIN_DEPTH = 8
VERDICTS = ("unknown", "allow", "warn", "block")


class CertFileError(ValueError):
    """A certificate, trust store or revocation file that cannot be used (message names it)."""


def sha256_hex(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def iso(t: datetime | None) -> str | None:
    return ct.iso(t) if t is not None else None


# ---------------------------------------------------------------- reading files

def split_certificates(data: bytes, where: str) -> list[bytes]:
    """DER certificates in a PEM file (every CERTIFICATE block) or one DER certificate."""
    blocks = PEM_CERT_RE.findall(data)
    if blocks:
        out = []
        for i, b in enumerate(blocks):
            try:
                out.append(base64.b64decode(b"".join(b.split()), validate=True))
            except ValueError:
                raise CertFileError(f"{where}: certificate {i + 1} is not valid base64") from None
        return out
    if data[:1] == b"\x30":
        return [data]
    raise CertFileError(f"{where}: no PEM certificate and not DER")


def read_certificates(path: str | Path) -> list[bytes]:
    p = Path(path)
    return split_certificates(read_input(p, CertFileError), str(p))


def _file_stamp(path: Path | None):
    if path is None:
        return None
    try:
        st = path.stat()
        if path.is_dir():
            return (st.st_mtime_ns, tuple(sorted((e.name, e.stat().st_mtime_ns) for e in os.scandir(path))))
        return (st.st_mtime_ns, st.st_size)
    except OSError:
        return "missing"


class TrustStore:
    """CA certificates (trust anchors) from a PEM bundle or a directory of PEM/DER files."""

    def __init__(self, certs: list[x509.Certificate], source: str = "", skipped: int = 0,
                 missing: bool = False):
        self.source = source
        self.skipped = skipped
        self.missing = missing
        self.certs = certs
        self.by_subject: dict[bytes, list[x509.Certificate]] = {}
        self.fingerprints: set[bytes] = set()
        self.keys: set[tuple[bytes, bytes]] = set()
        for c in certs:
            self.by_subject.setdefault(c.subject.public_bytes(), []).append(c)
            self.fingerprints.add(c.fingerprint(_SHA256()))
            self.keys.add((c.subject.public_bytes(), _spki(c)))

    @classmethod
    def load(cls, path: Path | None) -> "TrustStore":
        if path is None:
            return cls([], "", missing=True)
        p = Path(path)
        files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
        if not p.exists():
            return cls([], str(p), missing=True)
        certs, skipped, seen = [], 0, set()
        for f in files:
            try:
                data = f.read_bytes()
            except OSError:
                skipped += 1
                continue
            try:
                ders = split_certificates(data, str(f))
            except CertFileError:
                if p.is_dir():
                    continue            # not a certificate file
                raise
            for der in ders:
                if der in seen:
                    continue
                seen.add(der)
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")     # e.g. CAs with a non-positive serial
                        certs.append(x509.load_der_x509_certificate(der))
                except ValueError:
                    skipped += 1        # cryptography is stricter than OpenSSL
        return cls(certs, str(p), skipped)

    def __len__(self) -> int:
        return len(self.certs)

    def contains(self, cert: x509.Certificate) -> bool:
        return (cert.fingerprint(_SHA256()) in self.fingerprints
                or (cert.subject.public_bytes(), _spki(cert)) in self.keys)

    def issuers_of(self, cert: x509.Certificate) -> list[x509.Certificate]:
        return self.by_subject.get(cert.issuer.public_bytes(), [])


class Revocations:
    """REVOKED: fingerprints and serials from a text file, or the entries of a CRL.

    Text format, one entry a line (`#` starts a comment):
      sha256:HEX    (or a bare 64-digit hex fingerprint; colons allowed)
      serial:HEX    (any issuer)
    A CRL (PEM or DER) revokes its serials for certificates of its issuer; its
    signature is not checked: the operator vouches for the file."""

    def __init__(self, fingerprints=(), serials=(), issuer_serials=(), source: str = ""):
        self.fingerprints = set(fingerprints)
        self.serials = set(serials)
        self.issuer_serials = set(issuer_serials)
        self.source = source

    def __len__(self) -> int:
        return len(self.fingerprints) + len(self.serials) + len(self.issuer_serials)

    @classmethod
    def load(cls, path: Path | None) -> "Revocations":
        if path is None:
            return cls()
        p = Path(path)
        data = read_input(p, CertFileError, "cert.revocation")
        crls = PEM_CRL_RE.findall(data)
        if crls or data[:1] == b"\x30":
            entries = set()
            try:
                objs = ([x509.load_pem_x509_crl(b"-----BEGIN X509 CRL-----\n" + b + b"\n-----END X509 CRL-----\n")
                         for b in crls] if crls else [x509.load_der_x509_crl(data)])
            except ValueError as e:
                raise CertFileError(f"{p}: not a valid CRL ({e})") from None
            for crl in objs:
                issuer = crl.issuer.public_bytes()
                entries.update((issuer, r.serial_number) for r in crl)
            return cls(issuer_serials=entries, source=str(p))
        fps, serials = set(), set()
        for n, line in enumerate(data.decode(errors="replace").splitlines(), 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            kind, _, value = text.partition(":") if text.lower().startswith(("sha256:", "serial:")) else ("", "", text)
            hexv = value.replace(":", "").strip().lower()
            try:
                raw = bytes.fromhex(hexv) if len(hexv) % 2 == 0 else bytes.fromhex("0" + hexv)
            except ValueError:
                raise CertFileError(f"{p}:{n}: {text!r} is not sha256:HEX, serial:HEX or a fingerprint") from None
            if kind.lower() == "serial":
                serials.add(int.from_bytes(raw, "big"))
            elif len(raw) == 32:
                fps.add(raw)
            else:
                raise CertFileError(f"{p}:{n}: a SHA-256 fingerprint has 64 hex digits")
        return cls(fps, serials, source=str(p))

    def check(self, cert: x509.Certificate, fingerprint: bytes) -> str | None:
        if fingerprint in self.fingerprints:
            return "fingerprint"
        if cert.serial_number in self.serials:
            return "serial"
        if (cert.issuer.public_bytes(), cert.serial_number) in self.issuer_serials:
            return "crl"
        return None


def _SHA256():
    from cryptography.hazmat.primitives import hashes
    return hashes.SHA256()


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


@lru_cache(maxsize=1)
def _tld_extractor():
    import tldextract
    # suffix_list_urls=(): the bundled public-suffix snapshot, no network; no cache dir to write.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


# ---------------------------------------------------------------- names

def san_names(cert: x509.Certificate) -> tuple[list[str], list[str], bool]:
    """(DNS names, IP addresses, has a SAN extension); without SAN the subject CNs."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        cns = [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
        return [str(c) for c in cns], [], False
    return ([str(n) for n in san.get_values_for_type(x509.DNSName)],
            [str(a) for a in san.get_values_for_type(x509.IPAddress)], True)


def name_covers(pattern: str, host: str) -> bool:
    """RFC 6125: exact match, or `*.rest` matching exactly one leftmost label."""
    p = pattern.lower().rstrip(".")
    h = host.lower().rstrip(".")
    if p == h:
        return True
    if p.startswith("*.") and "*" not in p[2:]:
        label, _, rest = h.partition(".")
        return bool(label) and rest == p[2:]
    return False


def wildcard_abuse(name: str) -> bool:
    n = name.lower().rstrip(".")
    if "*" not in n:
        return False
    labels = n.split(".")
    if any("*" in lab for lab in labels[1:]) or labels[0] != "*":
        return True                     # not the whole leftmost label
    if len(labels) < 3:
        return True                     # `*` or `*.tld`
    base = ".".join(labels[1:])
    return not _tld_extractor()(base).domain   # `*.co.uk`: the base is a public suffix


def sni_covered(sni: str, dns_names: list[str], ips: list[str]) -> bool:
    try:
        addr = ipaddress.ip_address(sni)
    except ValueError:
        return any(name_covers(n, sni) for n in dns_names)
    return any(ipaddress.ip_address(a) == addr for a in ips)


# ---------------------------------------------------------------- settings

@dataclass
class Settings:
    weights: dict[str, int] = field(default_factory=lambda: dict(CERT_WEIGHTS))
    warn: int = 40
    block: int = 80
    short_validity: timedelta = timedelta(hours=72)
    min_rsa_bits: int = 2048
    min_ec_bits: int = 256
    dga_threshold: int | None = 600     # None: DGA_DOMAIN off (dns.dga.mode: off)
    dga_min_length: int = 8
    policy: ct.CtPolicy = field(default_factory=ct.CtPolicy)
    trust_store: Path | None = None
    revocation: Path | None = None
    log_list: Path | None = None

    @classmethod
    def from_config(cls, cfg, log_list: Path | None = None, trust_store: Path | None = None) -> "Settings":
        c, t = cfg.cert, cfg.cert.thresholds
        return cls(weights=dict(c.weights), warn=t.warn, block=t.block,
                   short_validity=timedelta(hours=t.short_validity_hours), min_rsa_bits=t.min_rsa_bits,
                   min_ec_bits=t.min_ec_bits,
                   dga_threshold=None if cfg.dns.dga.mode == "off" else cfg.dns.dga.threshold,
                   dga_min_length=cfg.dns.dga.min_length,
                   policy=ct.CtPolicy(cfg.ct.min_scts, cfg.ct.min_scts_long, cfg.ct.min_operators),
                   trust_store=trust_store or c.trust_store, revocation=c.revocation,
                   log_list=log_list or cfg.ct.log_list)


# ---------------------------------------------------------------- the analyzer

class Analyzer:
    """Loads the trust store, revocations and log list once (reload() re-reads
    them when their files change) and judges chains."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.trust = TrustStore([])
        self.revocations = Revocations()
        self.logs: ct.LogList | None = None
        self.warnings: list[str] = []
        self._stamps = None
        self.reload(force=True)

    def _current_stamps(self):
        s = self.settings
        return (_file_stamp(s.trust_store), _file_stamp(s.revocation), _file_stamp(s.log_list))

    def reload(self, force: bool = False) -> bool:
        """Re-read the files if they changed; True when something was reloaded.
        Raises CertFileError / ct.LogListError for files that cannot be used."""
        stamps = self._current_stamps()
        if not force and stamps == self._stamps:
            return False
        s = self.settings
        warnings = []
        trust = TrustStore.load(s.trust_store)
        if trust.missing:
            warnings.append(f"trust store {s.trust_store} is missing: every certificate is UNKNOWN_CA")
        elif trust.skipped:
            warnings.append(f"trust store {s.trust_store}: {trust.skipped} certificate(s) could not be parsed")
        revocations = Revocations.load(s.revocation)
        logs = None
        if s.log_list is not None:
            logs = ct.LogList.load(s.log_list)
            warnings += logs.warnings
        else:
            warnings.append("ct.log_list is not set: SCTs are counted but not verified, NO_CT_LOGS is not raised")
        self.trust, self.revocations, self.logs, self.warnings = trust, revocations, logs, warnings
        self._stamps = stamps
        return True

    # ------------------------------------------------------------ chains

    def _find_issuer(self, cert: x509.Certificate, pool: list[x509.Certificate]) -> x509.Certificate | None:
        for cand in pool + self.trust.issuers_of(cert):
            if cand is cert or cand.subject != cert.issuer:
                continue
            try:
                cert.verify_directly_issued_by(cand)
            except Exception:           # noqa: BLE001 - wrong key, unsupported algorithm, bad signature
                continue
            return cand
        return None

    def build_path(self, leaf: x509.Certificate, pool: list[x509.Certificate]
                   ) -> tuple[list[x509.Certificate], bool]:
        """(leaf → issuer → …, reaches a trust anchor)."""
        path, cur = [leaf], leaf
        for _ in range(MAX_CHAIN_DEPTH):
            if self.trust.contains(cur):
                return path, True
            issuer = self._find_issuer(cur, [c for c in pool if c not in path])
            if issuer is None:
                return path, False
            path.append(issuer)
            cur = issuer
        return path, False

    # ------------------------------------------------------------ judging

    def analyze(self, chain: list[bytes], sni: str | None = None, now: datetime | None = None) -> dict:
        """Judge a chain (DER, leaf first) as a client asking for `sni` would see it at `now`."""
        now = now or datetime.now(timezone.utc)
        leaf_der = chain[0]
        fp = hashlib.sha256(leaf_der).digest()
        out = {"sha256": fp.hex(), "sni": sni or None, "subject": None, "issuer": None, "serial": None,
               "not_before": None, "not_after": None, "flags": [], "threat_level": 0, "verdict": "allow",
               "scts": {"embedded": 0, "valid": 0, "invalid": 0, "unknown": 0, "unusable": 0, "operators": 0,
                        "required": None, "compliant": None, "logs": []},
               "chain": [sha256_hex(d) for d in chain], "trusted_by": None, "key": None, "dga_score": None,
               "revoked_by": None, "error": None}
        try:
            leaf = x509.load_der_x509_certificate(leaf_der)
        except ValueError as e:
            # cryptography is stricter than OpenSSL: a certificate it refuses is a finding.
            out["error"] = f"the certificate could not be parsed: {e}"
            return self._score(out, set(), forced=self.settings.warn)
        pool = []
        for d in chain[1:]:
            try:
                pool.append(x509.load_der_x509_certificate(d))
            except ValueError:
                pass
        try:
            flags = self._flags(leaf, pool, fp, sni, now, out)
        except Exception as e:          # noqa: BLE001 - lazily parsed extensions can still fail
            out["error"] = f"the certificate could not be analysed: {type(e).__name__}: {e}"
            return self._score(out, set(), forced=self.settings.warn)
        return self._score(out, flags)

    def _flags(self, leaf, pool, fp: bytes, sni: str | None, now: datetime, out: dict) -> set[str]:
        s = self.settings
        flags: set[str] = set()
        nb, na = leaf.not_valid_before_utc, leaf.not_valid_after_utc
        out.update(subject=leaf.subject.rfc4514_string(), issuer=leaf.issuer.rfc4514_string(),
                   serial=format(leaf.serial_number, "x"), not_before=iso(nb), not_after=iso(na))
        if na - nb < s.short_validity:
            flags.add("SHORT_VALIDITY")
        if now > na or now < nb:
            flags.add("EXPIRED")

        key = leaf.public_key()
        if isinstance(key, rsa.RSAPublicKey):
            out["key"] = {"type": "rsa", "bits": key.key_size}
            weak = key.key_size < s.min_rsa_bits
        elif isinstance(key, dsa.DSAPublicKey):
            out["key"] = {"type": "dsa", "bits": key.key_size}
            weak = key.key_size < s.min_rsa_bits
        elif isinstance(key, ec.EllipticCurvePublicKey):
            out["key"] = {"type": "ec", "bits": key.curve.key_size, "curve": key.curve.name}
            weak = key.curve.key_size < s.min_ec_bits
        elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            out["key"] = {"type": type(key).__name__.removesuffix("PublicKey").lower(), "bits": None}
            weak = False
        else:
            out["key"] = {"type": type(key).__name__, "bits": None}
            weak = False
        if weak:
            flags.add("WEAK_KEY")

        if leaf.issuer == leaf.subject:
            try:
                leaf.verify_directly_issued_by(leaf)
                flags.add("SELF_SIGNED")
            except Exception:           # noqa: BLE001 - issuer named itself but its key did not sign it
                pass

        dns_names, ips, _ = san_names(leaf)
        if any(wildcard_abuse(n) for n in dns_names):
            flags.add("WILDCARD_ABUSE")
        if sni and not sni_covered(sni, dns_names, ips):
            flags.add("DOMAIN_MISMATCH")

        path, trusted = self.build_path(leaf, pool)
        out["chain_path"] = [c.fingerprint(_SHA256()).hex() for c in path]
        if trusted:
            out["trusted_by"] = path[-1].subject.rfc4514_string()
        else:
            flags.add("UNKNOWN_CA")

        issuer = path[1] if len(path) > 1 else (leaf if "SELF_SIGNED" in flags else None)
        res = ct.evaluate(leaf, issuer, self.logs, now, s.policy)
        out["_valid_log_ids"] = res.pop("valid_log_ids")
        out["_earliest_ms"] = res.pop("earliest_ms")
        out["scts"] = res
        if res["compliant"] is False:
            flags.add("NO_CT_LOGS")

        revoked = self.revocations.check(leaf, fp)
        if revoked:
            flags.add("REVOKED")
            out["revoked_by"] = revoked

        if s.dga_threshold is not None:
            from nexusctl import dga
            names = [sni] if sni else [n.lstrip("*.") for n in dns_names]
            scores = [dga.score_name(n, s.dga_min_length) for n in names if n]
            out["dga_score"] = max(scores) if scores else 0
            if scores and out["dga_score"] >= s.dga_threshold:
                flags.add("DGA_DOMAIN")
        return flags

    def _score(self, out: dict, flags: set[str], forced: int | None = None) -> dict:
        s = self.settings
        out["flags"] = [f for f in CERT_FLAGS if f in flags]
        level = forced if forced is not None else min(100, sum(s.weights.get(f, 0) for f in flags))
        out["threat_level"] = level
        out["verdict"] = "block" if level >= s.block else "warn" if level >= s.warn else "allow"
        return out


def public_view(result: dict) -> dict:
    """The result without the agent's private fields (those starting with _)."""
    return {k: v for k, v in result.items() if not k.startswith("_")}
