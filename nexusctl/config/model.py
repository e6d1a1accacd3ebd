"""The validated config model. Unknown keys are rejected everywhere.

Each section documents itself in configs/nexus.yaml; README.md's config
reference is generated from the same descriptions (`nexusctl config show`).
"""
from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo,
                      field_validator, model_validator)

from nexusctl.paths import default_build_dir

IFNAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,14}$")
NETNS_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


def _ifname(v: str) -> str:
    if not IFNAME_RE.fullmatch(v) or v in (".", ".."):      # fullmatch: `$` would allow a final \n
        raise ValueError(f"{v!r} is not a valid interface name (1-15 characters: letters, digits, _ . : @ -)")
    return v


def _netns(v: str) -> str:
    if not NETNS_RE.fullmatch(v) or v in (".", ".."):
        raise ValueError(f"{v!r} is not a valid network namespace name")
    return v


def _abs_path(v: Path) -> Path:
    if not v.is_absolute():
        raise ValueError(f"{str(v)!r} must be an absolute path")
    if ".." in v.parts:
        raise ValueError(f"{str(v)!r} must not contain '..'")
    return v


def reject_duplicates(items, key, message) -> None:
    """ValueError(message(k)) for the first key seen twice."""
    seen = set()
    for it in items:
        k = key(it)
        if k in seen:
            raise ValueError(message(k))
        seen.add(k)


IfName = Annotated[str, AfterValidator(_ifname)]
NetnsName = Annotated[str, AfterValidator(_netns)]
AbsPath = Annotated[Path, AfterValidator(_abs_path)]
Port = Annotated[int, Field(ge=1, le=65535)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class VethPeer(Strict):
    """The other end of a veth pair: it gets an XDP_PASS program so that answers
    sent with XDP_TX are received (veth drops them silently otherwise)."""
    name: IfName
    netns: NetnsName | None = None


class Interface(Strict):
    name: IfName
    netns: NetnsName | None = Field(None, description="network namespace the interface lives in")
    xdp: bool = Field(True, description="attach the DNS fast path (XDP ingress)")
    tc_egress: bool = Field(True, description="attach the DNS policy/cache filler (TC egress)")
    xdp_mode: Literal["native", "generic", "auto"] = Field(
        "auto", description="auto tries native and falls back to generic only when native is refused")
    veth_peer: VethPeer | None = None

    @property
    def key(self) -> str:
        return f"{self.netns}/{self.name}" if self.netns else self.name


class RateLimit(Strict):
    enabled: bool = True
    rate: int = Field(200, ge=1, le=10_000_000, description="queries per second per client prefix")
    burst: int = Field(400, ge=1, le=10_000_000, description="bucket size (queries)")
    ipv4_prefix: int = Field(32, ge=8, le=32)
    ipv6_prefix: int = Field(64, ge=16, le=128)
    action: Literal["drop", "slip"] = "drop"
    slip_ratio: int = Field(2, ge=1, le=1000, description="with slip: every Nth limited query gets TC=1")
    max_clients: int = Field(65536, ge=16, le=16_777_216, description="LRU size of the bucket map")


class Dga(Strict):
    mode: Literal["off", "count", "block"] = "count"
    threshold: int = Field(600, ge=0, le=1000, description="score (0-1000) at or above which a name is suspicious")
    min_length: int = Field(8, ge=1, le=63, description="registrable labels shorter than this are not scored")


class Cache(Strict):
    enabled: bool = True
    max_entries: int = Field(16384, ge=16, le=4_194_304)
    min_ttl: int = Field(0, ge=0, le=86400, description="answers with a smaller TTL are not cached")
    max_ttl: int = Field(3600, ge=1, le=604800, description="cached entries expire after at most this")


class Latency(Strict):
    enabled: bool = True
    max_inflight: int = Field(65536, ge=16, le=4_194_304, description="queries awaiting an answer, LRU")


class Dns(Strict):
    ports: list[Port] = Field(default_factory=lambda: [53], min_length=1, max_length=4)
    malformed: Literal["drop", "pass"] = "drop"
    edns_udp_size: int = Field(1232, ge=512, le=4096, description="UDP size advertised in in-kernel answers")
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    dga: Dga = Field(default_factory=Dga)
    cache: Cache = Field(default_factory=Cache)
    latency: Latency = Field(default_factory=Latency)

    @field_validator("ports")
    @classmethod
    def _no_853(cls, v: list[int]) -> list[int]:
        if 853 in v:
            raise ValueError("853 is DNS over TLS/QUIC: it is encrypted and always passed, not parsed")
        if len(set(v)) != len(v):
            raise ValueError("ports are listed twice")
        return v


Action = Literal["block", "redirect", "synthesize", "allow"]
PATTERN_RE = re.compile(r"^(\*\.)?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?$|^[A-Za-z0-9_.-]+\*$")


def validate_pattern(p: str) -> str:
    p = p.strip().lower()
    if p.endswith(".") and not p.endswith("*."):
        p = p[:-1]
    if not p or len(p) > 253 or not PATTERN_RE.match(p):
        raise ValueError(f"{p!r} is not a pattern: use name.example, *.example (below it) or prefix*")
    labels = p.lstrip("*.").rstrip("*").split(".")
    if any(len(lab) > 63 for lab in labels):
        raise ValueError(f"{p!r} has a label longer than 63 characters")
    return p


class PolicyRule(Strict):
    pattern: Annotated[str, AfterValidator(validate_pattern)]
    action: Action
    to: str | None = Field(None, description="IPv4 or IPv6 address, for redirect and synthesize")
    qtypes: list[str] = Field(default_factory=list, description="empty = every type")
    priority: int = Field(100, ge=0, le=65535, description="lower wins")

    @field_validator("to")
    @classmethod
    def _addr(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            return str(ipaddress.ip_address(v))
        except ValueError:
            raise ValueError(f"{v!r} is not an IPv4 or IPv6 address") from None

    @field_validator("qtypes")
    @classmethod
    def _qtypes(cls, v: list[str]) -> list[str]:
        import dns.rdatatype
        out = []
        for t in v:
            try:
                out.append(dns.rdatatype.to_text(dns.rdatatype.from_text(t.upper())))
            except Exception:
                raise ValueError(f"{t!r} is not a DNS record type") from None
        return out

    @model_validator(mode="after")
    def _to_required(self) -> "PolicyRule":
        if self.action in ("redirect", "synthesize") and not self.to:
            raise ValueError(f"action {self.action} needs `to: ADDRESS`")
        if self.action in ("block", "allow") and self.to:
            raise ValueError(f"action {self.action} takes no `to`")
        return self


class Blocklist(Strict):
    path: Path
    format: Literal["domains", "hosts", "adblock", "rpz"] = "domains"
    action: Action = "block"
    to: str | None = None
    priority: int = Field(1000, ge=0, le=65535)

    @field_validator("path")
    @classmethod
    def _relative_to_config(cls, v: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        if not v.is_absolute() and base is not None:
            v = Path(base) / v
        return v


class PolicySettings(Strict):
    block_response: Literal["nxdomain", "refused", "drop"] = "nxdomain"
    max_rules: int = Field(2_097_152, ge=1024, le=16_777_216,
                           description="capacity of the rule map (changing it needs `down` + `up`)")
    synth_ttl: int = Field(60, ge=0, le=86400, description="TTL of synthesized answers")
    bloom: bool = Field(True, description="a bloom filter in front of the rule map (see docs/policy.md)")


CERT_FLAGS = ("SHORT_VALIDITY", "WILDCARD_ABUSE", "UNKNOWN_CA", "WEAK_KEY", "DOMAIN_MISMATCH", "SELF_SIGNED",
              "EXPIRED", "NO_CT_LOGS", "REVOKED", "DGA_DOMAIN")
CERT_WEIGHTS = {"REVOKED": 100, "WILDCARD_ABUSE": 60, "EXPIRED": 50, "DOMAIN_MISMATCH": 50, "WEAK_KEY": 40,
                "SELF_SIGNED": 40, "UNKNOWN_CA": 30, "DGA_DOMAIN": 30, "NO_CT_LOGS": 20, "SHORT_VALIDITY": 10}
CERT_MAX_DER = 16384                   # NEXUS_CERT_MAX_DER in bpf/include/nexus_cert.h


def _config_relative(v: Path | None, info: ValidationInfo) -> Path | None:
    base = (info.context or {}).get("base_dir")
    if v is not None and not v.is_absolute() and base is not None:
        v = Path(base) / v
    return v


class CertThresholds(Strict):
    warn: int = Field(40, ge=1, le=100, description="threat level (0-100) at or above which the verdict is warn")
    block: int = Field(80, ge=1, le=100, description="threat level at or above which the verdict is block")
    short_validity_hours: int = Field(72, ge=1, le=876_000, description="SHORT_VALIDITY below this lifetime")
    min_rsa_bits: int = Field(2048, ge=512, le=16384, description="WEAK_KEY: RSA/DSA keys below this")
    min_ec_bits: int = Field(256, ge=160, le=571, description="WEAK_KEY: EC keys below this")

    @model_validator(mode="after")
    def _order(self) -> "CertThresholds":
        if self.warn > self.block:
            raise ValueError(f"warn ({self.warn}) must not exceed block ({self.block})")
        return self


class Cert(Strict):
    """The certificate observer (uprobes on OpenSSL 3) and its agent, `nexusctl cert watch`."""
    enabled: bool = False
    libraries: list[str] = Field(default_factory=list, description=(
        "OpenSSL 3 libraries (paths or globs) to probe; empty: libssl.so.3 and libcrypto.so.3 "
        "found in the usual library directories"))
    probe_io: bool = Field(True, description=(
        "also mark threads inside SSL_read/SSL_peek/SSL_write(_ex), where handshakes run implicitly; "
        "false: only SSL_do_handshake/SSL_connect/SSL_accept (cheaper for busy TLS servers)"))
    max_der: int = Field(8192, ge=256, le=CERT_MAX_DER, description="DER bytes copied per certificate")
    ring_buffer_kib: int = Field(1024, ge=16, le=262144, description="ring buffer size (power of two)")
    dedup_window: int = Field(300, ge=0, le=86400, description=(
        "seconds during which a process sending the same certificate again sends only its key; 0: off"))
    max_threads: int = Field(16384, ge=64, le=1_048_576, description="threads/SSL objects tracked (LRU)")
    max_verdicts: int = Field(65536, ge=64, le=4_194_304, description="verdicts kept in the pinned maps (LRU)")
    trust_store: Path = Field(Path("/etc/ssl/certs/ca-certificates.crt"), description=(
        "PEM bundle, or a directory of PEM/DER files: the CAs that are not UNKNOWN_CA"))
    revocation: Path | None = Field(None, description=(
        "REVOKED: a text file of sha256:HEX / serial:HEX lines, or a CRL (PEM or DER)"))
    events_file: Path | None = Field(None, description="verdicts log (JSON lines); default <state_dir>/cert-events.jsonl")
    events_keep: int = Field(10000, ge=10, le=10_000_000, description="events kept in events_file")
    weights: dict[str, int] = Field(default_factory=lambda: dict(CERT_WEIGHTS), description=(
        "threat points per flag (the threat level is their sum, capped at 100)"))
    thresholds: CertThresholds = Field(default_factory=CertThresholds)

    @field_validator("libraries")
    @classmethod
    def _libs(cls, v: list[str]) -> list[str]:
        for p in v:
            if not p.startswith("/"):
                raise ValueError(f"{p!r} must be an absolute path or glob")
        return v

    @field_validator("ring_buffer_kib")
    @classmethod
    def _pow2(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError(f"{v} is not a power of two")
        return v

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, int]) -> dict[str, int]:
        out = dict(CERT_WEIGHTS)
        for k, w in v.items():
            if k not in CERT_FLAGS:
                raise ValueError(f"{k!r} is not a flag; flags: {', '.join(CERT_FLAGS)}")
            if not 0 <= int(w) <= 100:
                raise ValueError(f"weight of {k} must be 0-100")
            out[k] = int(w)
        return out

    @field_validator("trust_store", "revocation", "events_file")
    @classmethod
    def _rel(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return _config_relative(v, info)


class Ct(Strict):
    """Certificate Transparency: which logs count, the policy, and enforcement."""
    log_list: Path | None = Field(None, description=(
        "log list in the Chrome v3 JSON format; unset: SCTs are counted, not verified, and "
        "NO_CT_LOGS is not raised"))
    min_scts: int = Field(2, ge=1, le=16, description="valid SCTs (distinct logs) a certificate needs")
    min_scts_long: int = Field(3, ge=1, le=16, description="...when it is valid for more than 180 days")
    min_operators: int = Field(2, ge=1, le=16, description="distinct log operators among them")
    enforce: Literal["audit", "kill"] = Field("audit", description=(
        "kill: SIGKILL a process parsing a certificate the agent already judged block"))

    @field_validator("log_list")
    @classmethod
    def _rel(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return _config_relative(v, info)


def parse_listen(v: str) -> tuple[str, int]:
    """'HOST:PORT' or '[V6]:PORT' → (host, port)."""
    v = v.strip()
    if v.startswith("["):
        host, sep, port = v[1:].partition("]:")
    else:
        host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{v!r} is not HOST:PORT (e.g. 127.0.0.1:9435 or [::1]:9435)")
    if ":" in host and not v.startswith("["):
        raise ValueError(f"{v!r}: write an IPv6 address in brackets, e.g. [::1]:9435")
    return host, int(port)


def _listen(v: str) -> str:
    parse_listen(v)
    return v.strip()


PerfEvent = Literal["cycles", "instructions", "cache_misses"]


class Metrics(Strict):
    """Tracepoints and perf events (bpf/nexus_metrics.c), `stats`, `metrics serve`."""
    enabled: bool = Field(False, description="load and attach the metrics programs")
    listen: Annotated[str, AfterValidator(_listen)] = Field(
        "127.0.0.1:9435", description="`metrics serve` address (HOST:PORT; loopback unless you mean it)")
    max_processes: int = Field(16384, ge=64, le=1_048_576,
                               description="LRU size of nexus_procs (per-process figures, shared with cert/enforce)")
    max_interfaces: int = Field(256, ge=4, le=65536, description="LRU size of nexus_netif")
    interfaces: list[IfName] = Field(default_factory=list, max_length=8,
                                     description="count only these interface names (empty: every interface)")
    tls_ports: list[Port] = Field(default_factory=lambda: [443], min_length=1, max_length=4,
                                  description="TCP ports whose established connections count as TLS")
    sample_frequency: int = Field(99, ge=0, le=10_000, description="CPU samples per second per CPU; 0: no sampling")
    hardware_events: list[PerfEvent] = Field(
        default_factory=lambda: ["cycles", "instructions", "cache_misses"],
        description="hardware events sampled too, where the CPU (or VM) exposes them")
    export_processes: int = Field(50, ge=0, le=10_000,
                                  description="processes exported to Prometheus (the busiest; pid is a label)")

    @field_validator("tls_ports", "hardware_events", "interfaces")
    @classmethod
    def _no_repeats(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError("an item is listed twice")
        return v


ENFORCE_MAX_CGROUPS = 64       # NEXUS_ENF_MAX_CGROUPS (bpf/include/nexus_enforce.h)
ENFORCE_MAX_ALLOW = 4096       # NEXUS_ENF_MAX_ALLOW
ENFORCE_MAX_PORTS = 8          # NEXUS_ENF_MAX_PORTS


def _network(v: str) -> str:
    """An IPv4/IPv6 address or CIDR prefix, normalised (198.18.0.1 → 198.18.0.1/32)."""
    if not isinstance(v, str):
        v = str(v)
    try:
        return str(ipaddress.ip_network(v.strip(), strict=True))
    except ValueError as e:
        if "host bits set" in str(e):
            net = ipaddress.ip_network(v.strip(), strict=False)
            raise ValueError(f"{v!r} has host bits set; did you mean {net}?") from None
        raise ValueError(f"{v!r} is not an IPv4/IPv6 address or CIDR prefix") from None


def _enforce_ports(v: list[int] | None) -> list[int] | None:
    if v is None:
        return v
    if len(set(v)) != len(v):
        raise ValueError("ports are listed twice")
    return v


EnforcePorts = Annotated[list[Port], Field(min_length=1, max_length=ENFORCE_MAX_PORTS),
                         AfterValidator(_enforce_ports)]


def _cgroup_path(v: str) -> str:
    v = v.strip()
    if not v:
        raise ValueError("empty cgroup path")
    if ".." in Path(v).parts:
        raise ValueError(f"{v!r} must not contain '..'")
    return v.rstrip("/") or "/"


class EnforceCgroup(Strict):
    """One cgroup (v2) whose processes, and its descendants', may send DNS only to `allow`."""
    path: Annotated[str, AfterValidator(_cgroup_path)] = Field(
        description="relative to the cgroup2 mount, or absolute (under the mount, or as in /proc/PID/cgroup)")
    allow: list[Annotated[str, AfterValidator(_network)]] = Field(
        default_factory=list, description="addresses or CIDR prefixes DNS may go to; empty: none")
    ports: EnforcePorts | None = Field(None, description="DNS ports for this cgroup (default: enforce.ports)")


class Enforce(Strict):
    enabled: bool = False
    mode: Literal["audit", "enforce"] = Field("enforce", description="audit only counts and reports")
    lsm: Literal["off", "auto", "required"] = Field(
        "off", description="BPF LSM hooks instead of cgroup hooks: auto where usable; required exits 3 without")
    ports: EnforcePorts = Field(default_factory=lambda: [53, 853], description="DNS ports (UDP and TCP)")
    cgroups: list[EnforceCgroup] = Field(default_factory=list, max_length=ENFORCE_MAX_CGROUPS)

    @field_validator("lsm", mode="before")
    @classmethod
    def _yaml_off(cls, v):
        # YAML 1.1 reads a bare `off` as false
        return "off" if v is False else v

    @field_validator("cgroups")
    @classmethod
    def _unique_cgroups(cls, v: list[EnforceCgroup]) -> list[EnforceCgroup]:
        reject_duplicates(v, lambda c: c.path, lambda k: f"cgroup {k} is listed twice")
        total = sum(len(c.allow) for c in v)
        if total > ENFORCE_MAX_ALLOW:
            raise ValueError(f"{total} allow entries; at most {ENFORCE_MAX_ALLOW} in all")
        return v

    @model_validator(mode="after")
    def _needs_cgroups(self) -> "Enforce":
        if self.enabled and not self.cgroups:
            raise ValueError("enabled, but no cgroups are listed: add enforce.cgroups[{path, allow}]")
        return self

    def ports_of(self, cg: EnforceCgroup) -> list[int]:
        return list(cg.ports if cg.ports is not None else self.ports)


class Config(Strict):
    pin_root: AbsPath = Field(Path("/sys/fs/bpf/nexus"), description="bpffs directory nexusctl owns")
    state_dir: AbsPath = Field(Path("/run/nexus"), description="state file, lock, runtime rules")
    build_dir: Path = Field(default_factory=default_build_dir, description="compiled objects and vmlinux.h")
    interfaces: list[Interface] = Field(default_factory=list)
    dns: Dns = Field(default_factory=Dns)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    policies: list[PolicyRule] = Field(default_factory=list)
    blocklists: list[Blocklist] = Field(default_factory=list)
    cert: Cert = Field(default_factory=Cert)
    ct: Ct = Field(default_factory=Ct)
    metrics: Metrics = Field(default_factory=Metrics)
    enforce: Enforce = Field(default_factory=Enforce)

    _source: str = PrivateAttr(default="<defaults>")

    @field_validator("build_dir")
    @classmethod
    def _build_rel(cls, v: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        if not v.is_absolute() and base is not None:
            v = Path(base) / v
        return v

    @field_validator("interfaces")
    @classmethod
    def _unique_ifaces(cls, v: list[Interface]) -> list[Interface]:
        reject_duplicates(v, lambda i: i.key, lambda k: f"interface {k} is listed twice")
        return v

    @field_validator("policies")
    @classmethod
    def _unique_patterns(cls, v: list[PolicyRule]) -> list[PolicyRule]:
        reject_duplicates(v, lambda r: r.pattern, lambda k: f"pattern {k} has two rules; one rule per pattern")
        return v

    @property
    def source(self) -> str:
        return self._source
