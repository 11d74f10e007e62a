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

import msgspec

ENV_PREFIX = "GATEWAYD_"


class ConfigError(Exception):
    """A configuration problem, phrased as one line naming the file and field."""


class ServerSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    max_body_bytes: int = 4 * 1024 * 1024
    admin_port: int = 0  # 0: admin API disabled
    replica_prefix: str = ""  # default: hostname


class ControlSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    dir: str = "var/control"  # embedded store (used when redis_url is empty)
    redis_url: str = ""
    poll_interval_ms: int = 200  # embedded store: how often replicas look for flips
    resync_interval_ms: int = 2000  # Redis: periodic pointer re-read (pub/sub is a hint)


class AuditSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    dir: str = "var/audit"
    segment_bytes: int = 64 * 1024 * 1024


class CacheSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Per-worker memory bounds; whether and how long to cache is versioned config."""

    max_entries: int = 10_000
    max_bytes: int = 64 * 1024 * 1024


class CallerKey(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    tenant: str
    sha256: str  # hex SHA-256 of the key: keys are never stored in clear


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
    providers: dict[str, Provider] = {}
    bootstrap: Bootstrap = Bootstrap()
    base_dir: str = "."  # set by the loader: relative paths resolve against the file's folder

    def path(self, value: str) -> Path:
        """Resolves a path from the file against the file's own folder."""
        p = Path(value)
        return p if p.is_absolute() else Path(self.base_dir) / p


PROVIDER_KINDS = ("openai", "anthropic")


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
        rest = name[len(ENV_PREFIX):].lower()
        for section, fields in sections.items():
            field = rest[len(section) + 1:] if rest.startswith(section + "_") else None
            if field in fields:
                raw.setdefault(section, {})[field] = _scalar(value)


def _scalar_sections() -> dict[str, set[str]]:
    return {
        "server": set(ServerSection.__struct_fields__),
        "control": set(ControlSection.__struct_fields__),
        "audit": set(AuditSection.__struct_fields__),
        "cache": set(CacheSection.__struct_fields__),
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
    for i, key in enumerate(s.keys):
        if len(key.sha256) != 64 or any(c not in "0123456789abcdef" for c in key.sha256):
            raise ConfigError(f"{label}: keys[{i}].sha256: must be 64 lowercase hex digits")
        if not key.tenant:
            raise ConfigError(f"{label}: keys[{i}].tenant: must not be empty")
    if not s.providers:
        raise ConfigError(f"{label}: providers: at least one provider is required ([providers.NAME])")
    for name, provider in s.providers.items():
        if provider.kind not in PROVIDER_KINDS:
            raise ConfigError(f"{label}: providers.{name}.kind: must be one of {', '.join(PROVIDER_KINDS)}")
        if not provider.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"{label}: providers.{name}.base_url: must start with http:// or https://")
