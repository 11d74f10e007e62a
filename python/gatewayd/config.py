"""Static process configuration: one TOML file plus ``GATEWAYD_<SECTION>_<FIELD>`` overrides.

Only what cannot change without a restart lives here (listen address, stores, provider
credentials, caller keys). Behaviour that operators flip and roll back lives in the
versioned ``config`` domain instead (see :mod:`gatewayd.control.documents`).
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from pathlib import Path
from typing import Literal

import msgspec

from gatewayd.errors import BadInputError

ENV_PREFIX = "GATEWAYD_"


class ConfigError(BadInputError):
    """A configuration problem, phrased as one line naming the file and field."""


class ServerSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    max_body_bytes: int = 4 * 1024 * 1024
    admin_port: int = 0  # 0: admin API disabled
    replica_prefix: str = ""  # default: hostname
    # GET /metrics on the data port, unauthenticated; the admin API serves it to any token either way
    metrics_on_data_port: bool = True
    # Hostile or broken clients: a connection whose request head has not arrived within
    # header_timeout_s (idle keep-alive included) is closed; a body with no bytes for
    # body_idle_timeout_s, or not complete within body_timeout_s, is answered 408.
    header_timeout_s: float = 10.0
    body_idle_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    # Open client connections per worker; more wait in the listen backlog. Lowered at start
    # to what the open-file limit leaves room for (see gatewayd.server.connections).
    max_connections: int = 1024
    # The interface granian serves the app through: ASGI (the default, any ASGI server can
    # run the app) or granian's own RSGI (less work per request on granian's side).
    interface: Literal["asgi", "rsgi"] = "asgi"


class ControlSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    dir: str = "var/control"  # embedded store (used when redis_url is empty)
    redis_url: str = ""
    resync_interval_ms: int = 2000  # periodic pointer re-read: notifications are only hints


class AuditSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Where the chains live, who signs their checkpoints and how long they are kept. Static
    on purpose: no rollback of the versioned config may touch them (docs/ROLLBACK.md R8)."""

    dir: str = "var/audit"
    segment_bytes: int = 64 * 1024 * 1024
    signing_key: str = ""  # Ed25519 key file (`gatewayd audit keygen`); empty: no checkpoints
    keyring: str = ""  # verifier keys, retired ones included (default: the signing key's own)
    origin: str = "gatewayd"  # checkpoints name their log `<origin>/<replica>`
    checkpoint_interval_s: float = 60.0
    retain_days: float = 0.0  # drop sealed segments older than this; 0: keep forever
    retain_bytes: int = 0  # per replica chain; 0: no limit


class CacheSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Per-worker memory bounds; whether and how long to cache is versioned config."""

    max_entries: int = 10_000
    max_bytes: int = 64 * 1024 * 1024


class CallerKey(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    tenant: str
    sha256: str  # hex SHA-256 of the key: keys are never stored in clear
    name: str = ""  # what usage and metrics call it; default: static:<first 8 hex of sha256>


class AdminToken(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A bearer token of the admin API; its name is the actor on the change records it makes."""

    name: str
    role: str  # viewer | operator | admin
    sha256: str  # hex SHA-256 of the token: tokens are never stored in clear


class Provider(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    kind: str  # "openai" (any OpenAI-compatible API) or "anthropic"
    base_url: str
    api_key: str = ""
    api_key_env: str = ""
    headers: dict[str, str] = {}
    max_connections: int = 512

    def resolved_key(self) -> str:
        """The provider key, from the environment when ``api_key_env`` names a variable."""
        if self.api_key_env:
            return os.environ.get(self.api_key_env, "")
        return self.api_key


# The response-contract check's probes (docs/ROLLBACK.md R11, gatewayd.control.contract).
CONTRACT_PROBES = ("chat", "chat-stream", "messages", "messages-stream")


class ContractSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The response-contract check before a routing promotion or a rollback to other upstreams
    (docs/ROLLBACK.md R11): which probes are sent through both positions, and how long each
    may take."""

    probes: tuple[str, ...] = CONTRACT_PROBES  # a subset of CONTRACT_PROBES
    timeout_s: float = 10.0


class TracingSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """OpenTelemetry traces over OTLP/HTTP (gatewayd.server.tracing; needs `gatewayd[otel]`).
    Off unless `endpoint` or the standard OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set: off,
    the request path creates no span and no context."""

    # The collector's OTLP/HTTP URL: a bare base URL gets /v1/traces appended.
    endpoint: str = ""
    service_name: str = "gatewayd"
    sample_ratio: float = 1.0  # of new traces; a client's sampled flag is followed (parent-based)
    headers: dict[str, str] = {}  # sent with each export (a collector's auth token)


class Bootstrap(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Documents pushed and activated as version 1 when a store is empty."""

    policy: str = ""
    routing: str = ""
    config: str = ""


class Settings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    server: ServerSection = ServerSection()
    control: ControlSection = ControlSection()
    audit: AuditSection = AuditSection()
    cache: CacheSection = CacheSection()
    keys: list[CallerKey] = []
    admin_tokens: list[AdminToken] = []
    providers: dict[str, Provider] = {}
    contract: ContractSection = ContractSection()
    tracing: TracingSection = TracingSection()
    bootstrap: Bootstrap = Bootstrap()
    base_dir: str = "."  # set by the loader: relative paths resolve against the file's folder

    def path(self, value: str) -> Path:
        """Resolves a path from the file against the file's own folder."""
        p = Path(value)
        return p if p.is_absolute() else Path(self.base_dir) / p


PROVIDER_KINDS = ("openai", "anthropic")
# Each role may do what the ones before it may: read; activate and roll back; push.
ADMIN_ROLES = ("viewer", "operator", "admin")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load(path: str | os.PathLike[str] | None, environ: dict[str, str] | None = None) -> Settings:
    """Reads, overrides from the environment, and validates; raises ConfigError naming the field."""
    environ = dict(os.environ if environ is None else environ)
    raw: dict = {}
    label = "defaults"
    if path:
        label = str(path)
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{label}: file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{label}: {exc}") from None
    _apply_env(raw, environ)
    raw["base_dir"] = str(Path(path).resolve().parent) if path else os.getcwd()
    try:
        settings = msgspec.convert(raw, Settings)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{label}: {exc}") from None
    _check(settings, label)
    return settings


def _apply_env(raw: dict, environ: dict[str, str]) -> None:
    """``GATEWAYD_SERVER_PORT=9000`` sets ``[server] port``; values are parsed as TOML scalars."""
    sections = _scalar_sections()
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "GATEWAYD_CONFIG":
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        for section, fields in sections.items():
            field = rest[len(section) + 1 :] if rest.startswith(section + "_") else None
            if field in fields:
                raw.setdefault(section, {})[field] = _scalar(value)


def _scalar_sections() -> dict[str, set[str]]:
    return {
        "server": set(ServerSection.__struct_fields__),
        "control": set(ControlSection.__struct_fields__),
        "audit": set(AuditSection.__struct_fields__),
        "cache": set(CacheSection.__struct_fields__),
        "contract": set(ContractSection.__struct_fields__),
        "tracing": set(TracingSection.__struct_fields__) - {"headers"},
    }


def _scalar(text: str) -> object:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _check(s: Settings, label: str) -> None:
    if not 0 < s.server.port < 65536:
        raise ConfigError(f"{label}: server.port: must be between 1 and 65535")
    if s.server.workers < 1:
        raise ConfigError(f"{label}: server.workers: must be at least 1")
    if s.server.max_body_bytes < 1024:
        raise ConfigError(f"{label}: server.max_body_bytes: must be at least 1024")
    if not 0 < s.server.header_timeout_s <= 60:  # granian's limit: 60 000 ms
        raise ConfigError(f"{label}: server.header_timeout_s: must be above 0 and at most 60")
    for field in ("body_idle_timeout_s", "body_timeout_s"):
        if getattr(s.server, field) <= 0:
            raise ConfigError(f"{label}: server.{field}: must be positive")
    if s.server.max_connections < 1:
        raise ConfigError(f"{label}: server.max_connections: must be at least 1")
    if not 0 <= s.server.admin_port < 65536 or s.server.admin_port == s.server.port:
        raise ConfigError(f"{label}: server.admin_port: must be 0 (off) or a port other than server.port")
    for i, key in enumerate(s.keys):
        if not _is_sha256_hex(key.sha256):
            raise ConfigError(f"{label}: keys[{i}].sha256: must be 64 lowercase hex digits")
        if not key.tenant:
            raise ConfigError(f"{label}: keys[{i}].tenant: must not be empty")
    _check_admin_tokens(s, label)
    if not s.providers:
        raise ConfigError(f"{label}: providers: at least one provider is required ([providers.NAME])")
    a = s.audit
    if a.checkpoint_interval_s <= 0:
        raise ConfigError(f"{label}: audit.checkpoint_interval_s: must be positive")
    if not a.origin or any(c.isspace() or c == "+" for c in a.origin):
        raise ConfigError(f"{label}: audit.origin: must be non-empty, without spaces or '+'")
    if a.retain_days < 0 or a.retain_bytes < 0:
        raise ConfigError(f"{label}: audit.retain_days and audit.retain_bytes: must not be negative")
    if (a.retain_days or a.retain_bytes) and not a.signing_key:
        raise ConfigError(
            f"{label}: audit.signing_key: retention needs it (kept segments are pinned by signed checkpoints)"
        )
    _check_contract(s.contract, label)
    _check_tracing(s.tracing, label)
    for name, provider in s.providers.items():
        if provider.kind not in PROVIDER_KINDS:
            raise ConfigError(f"{label}: providers.{name}.kind: must be one of {', '.join(PROVIDER_KINDS)}")
        if not provider.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"{label}: providers.{name}.base_url: must start with http:// or https://")


def _check_contract(c: ContractSection, label: str) -> None:
    unknown = [p for p in c.probes if p not in CONTRACT_PROBES]
    if not c.probes or unknown or len(set(c.probes)) != len(c.probes):
        said = f" ({', '.join(map(repr, unknown))} is not one)" if unknown else ""
        raise ConfigError(
            f"{label}: contract.probes: must list one or more of {', '.join(CONTRACT_PROBES)}, each once{said}"
        )
    if not 0 < c.timeout_s <= 300:
        raise ConfigError(f"{label}: contract.timeout_s: must be above 0 and at most 300")


def _check_tracing(t: TracingSection, label: str) -> None:
    if t.endpoint and not t.endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"{label}: tracing.endpoint: must start with http:// or https:// (OTLP/HTTP)")
    if not t.service_name:
        raise ConfigError(f"{label}: tracing.service_name: must not be empty")
    if not 0 <= t.sample_ratio <= 1:
        raise ConfigError(f"{label}: tracing.sample_ratio: must be between 0 and 1")


def _check_admin_tokens(s: Settings, label: str) -> None:
    names: set[str] = set()
    digests: set[str] = set()
    for i, token in enumerate(s.admin_tokens):
        if not token.name or token.name in names:
            raise ConfigError(f"{label}: admin_tokens[{i}].name: must be non-empty and unique")
        if token.role not in ADMIN_ROLES:
            raise ConfigError(f"{label}: admin_tokens[{i}].role: must be one of {', '.join(ADMIN_ROLES)}")
        if not _is_sha256_hex(token.sha256) or token.sha256 in digests:
            raise ConfigError(f"{label}: admin_tokens[{i}].sha256: must be 64 lowercase hex digits, unique")
        names.add(token.name)
        digests.add(token.sha256)
    if s.server.admin_port and not s.admin_tokens:
        raise ConfigError(
            f"{label}: admin_tokens: server.admin_port is set but no token is configured "
            "(create one with `gatewayd admin-token create --name NAME --role admin`)"
        )


def _is_sha256_hex(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)
