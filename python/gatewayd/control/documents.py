"""Versioned documents of the three domains: parsing, validation and compilation.

A document is stored byte for byte as pushed (docs/ROLLBACK.md R1); what replicas compile is
its JSON form. Validation is compilation: a document that does not compile is refused
with a one-line message naming the field, and nothing is stored.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path

import msgspec
import yaml

from gatewayd import _core
from gatewayd.control.keys import BUDGET_UNITS, PERIODS, Budget
from gatewayd.errors import DocumentError

DOMAINS = ("policy", "routing", "config")


class CacheSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    enabled: bool = True
    ttl_s: float = 300.0
    # "deterministic": cache requests with temperature 0 (and embeddings) or an explicit
    # `x-gatewayd-cache: use` header; "header": only with the header; "off": never.
    mode: str = "deterministic"


class AuditSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    fsync: str = "interval"  # never | interval | group | always (docs/AUDIT.md)
    fsync_interval_ms: int = 200
    # When a request's record cannot be written: "closed" answers 503, so nothing is served
    # unrecorded; "open" serves anyway, logs it and counts it (the chain itself stays whole).
    on_failure: str = "closed"


RATE_LIMIT_SCOPES = ("replica", "cluster")


class RateLimit(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Per tenant: a token bucket refilled at `requests_per_minute`, in each replica.

    `scope: cluster` makes the figures the whole deployment's: each live replica (one that
    heartbeated within the barrier's window) enforces an even share of them, with no store
    on the request path. `replica` (the default) applies them to every replica in full."""

    requests_per_minute: int = 0  # 0: no limit
    burst: int = 0  # bucket size; 0: a tenth of a minute's allowance (at least 1)
    scope: str = "replica"  # replica | cluster


class Ejection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Passive health, per replica: a provider that fails `after_failures` requests in a
    row is skipped for its fallbacks for `for_s` seconds, then tried again."""

    after_failures: int = 5  # 0: never eject
    for_s: float = 10.0


class Price(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One model's price per million tokens, in the prices' currency."""

    input: float
    output: float = 0.0
    cached: float | None = None  # input tokens read from the provider's prompt cache; default: input's


class Prices(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """What each provider's models cost (the `prices` of the config domain): versioned, so a
    price change rolls back like any other, and every request record names the version
    that priced it (`price_version`)."""

    currency: str = "USD"
    # provider name -> upstream model (a glob: the exact name wins, else the longest glob
    # that matches) -> price
    providers: dict[str, dict[str, Price]] = {}

    def price(self, provider: str, model: str) -> Price | None:
        models = self.providers.get(provider)
        if not models:
            return None
        exact = models.get(model)
        if exact is not None:
            return exact
        matching = [glob for glob in models if fnmatch.fnmatchcase(model, glob)]
        return models[max(matching, key=len)] if matching else None


class RuntimeConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The ``config`` domain: behaviour that hot-reloads and rolls back (R12)."""

    upstream_timeout_s: float = 120.0
    retries: int = 0  # extra attempts when the provider refuses the connection (nothing sent)
    retry_backoff_ms: int = 50  # before retry n (1, 2, ...): this many ms times 2**(n-1)
    cache: CacheSettings = CacheSettings()
    audit: AuditSettings = AuditSettings()
    rate_limit: RateLimit = RateLimit()
    ejection: Ejection = Ejection()
    # A stream whose version set leaves service (a rollback, or another version activated
    # over it) while it is relayed: "finish" relays it to its end, "cut" ends it with an
    # error event. The config the stream was admitted under decides (R6).
    inflight_on_revert: str = "finish"
    prices: Prices = Prices()
    # Per tenant: a spending cap per UTC day or month, in the prices' currency or tokens
    # (gatewayd.server.budgets); a key's own budget is set when it is created.
    budgets: dict[str, Budget] = {}


CACHE_MODES = ("deterministic", "header", "off")
FAILURE_MODES = ("closed", "open")
INFLIGHT_ON_REVERT = ("finish", "cut")
FSYNC_POLICIES: tuple[str, ...] = tuple(_core.FSYNC_POLICIES)  # the Rust audit writer's names


def parse(data: bytes, name: str) -> object:
    """Parses YAML (which includes JSON) or TOML by the file name's suffix."""
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{name}: not UTF-8 text (byte {exc.start})") from None
    if name.endswith(".toml"):
        import tomllib

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise DocumentError(f"{name}: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise DocumentError(f"{name}: {where}{problem}") from None


def to_json(tree: object, name: str) -> bytes:
    if not isinstance(tree, dict):
        raise DocumentError(f"{name}: the document must be a mapping at the top level")
    try:
        return json.dumps(tree, sort_keys=True, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise DocumentError(f"{name}: {exc}") from None


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def compile_document(
    domain: str, data: bytes, name: str, providers: list[tuple[str, str]], version: int = 0
) -> _core.Policy | _core.Routing | RuntimeConfig:
    """Compiles raw document bytes into what a replica serves from; raises DocumentError.

    `providers` are the (name, kind) pairs of the static config: a route to a provider
    this host does not have is an error. `version` is the registry's number for it (0 for
    a document not pushed yet): compiled policies and routings carry it to every request.
    """
    doc = to_json(parse(data, name), name)
    try:
        if domain == "policy":
            return _core.Policy(doc, version)
        if domain == "routing":
            return _core.Routing(doc, version, providers)
        if domain == "config":
            return runtime_config(doc, name)
    except _core.CompileError as exc:
        raise DocumentError(f"{name}: {exc}") from None
    raise DocumentError(f"{name}: unknown domain {domain!r} (expected one of {', '.join(DOMAINS)})")


def runtime_config(doc: bytes, name: str) -> RuntimeConfig:
    try:
        cfg = msgspec.json.decode(doc, type=RuntimeConfig)
    except msgspec.ValidationError as exc:
        raise DocumentError(f"{name}: {exc}") from None
    if cfg.cache.mode not in CACHE_MODES:
        raise DocumentError(f"{name}: cache.mode: must be one of {', '.join(CACHE_MODES)}")
    if cfg.audit.fsync not in FSYNC_POLICIES:
        raise DocumentError(f"{name}: audit.fsync: must be one of {', '.join(FSYNC_POLICIES)}")
    if cfg.upstream_timeout_s <= 0:
        raise DocumentError(f"{name}: upstream_timeout_s: must be positive")
    if cfg.rate_limit.requests_per_minute < 0 or cfg.rate_limit.burst < 0:
        raise DocumentError(f"{name}: rate_limit: requests_per_minute and burst must not be negative")
    if cfg.rate_limit.scope not in RATE_LIMIT_SCOPES:
        raise DocumentError(f"{name}: rate_limit.scope: must be one of {', '.join(RATE_LIMIT_SCOPES)}")
    if cfg.audit.on_failure not in FAILURE_MODES:
        raise DocumentError(f"{name}: audit.on_failure: must be one of {', '.join(FAILURE_MODES)}")
    if cfg.retries < 0:
        raise DocumentError(f"{name}: retries: must not be negative")
    if cfg.retry_backoff_ms < 0:
        raise DocumentError(f"{name}: retry_backoff_ms: must not be negative")
    if cfg.ejection.after_failures < 0:
        raise DocumentError(f"{name}: ejection.after_failures: must not be negative")
    if cfg.ejection.for_s <= 0:
        raise DocumentError(f"{name}: ejection.for_s: must be positive")
    if cfg.inflight_on_revert not in INFLIGHT_ON_REVERT:
        raise DocumentError(f"{name}: inflight_on_revert: must be one of {', '.join(INFLIGHT_ON_REVERT)}")
    _check_prices(cfg.prices, name)
    for tenant, budget in cfg.budgets.items():
        if budget.unit not in BUDGET_UNITS or budget.period not in PERIODS or not budget.amount > 0:
            raise DocumentError(
                f"{name}: budgets.{tenant}: amount must be above 0, unit one of {', '.join(BUDGET_UNITS)}, "
                f"period one of {', '.join(PERIODS)}"
            )
    return cfg


def _check_prices(prices: Prices, name: str) -> None:
    if not (len(prices.currency) == 3 and prices.currency.isascii() and prices.currency.isupper()):
        raise DocumentError(f"{name}: prices.currency: must be an ISO 4217 code such as USD")
    for provider, models in prices.providers.items():
        for model, price in models.items():
            if min(price.input, price.output, price.cached or 0.0) < 0:
                raise DocumentError(f"{name}: prices.providers.{provider}.{model}: prices must not be negative")


def read_file(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise DocumentError(f"{path}: {exc.strerror}") from None
