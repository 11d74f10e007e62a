"""Caller keys created and revoked at run time, kept as SHA-256 digests in the control store.

A key is stored, then a change of kind `key` (no pointer moves) is recorded: every replica
reloads the key table when it applies the change and acknowledges it, so creation and
revocation pass the same barrier as a flip (R4), and `revoke` returns when no replica
accepts the key any more. Keys in the static TOML keep working beside these.
"""

from __future__ import annotations

import calendar
import fnmatch
import hashlib
import re
import secrets
import time
from typing import TYPE_CHECKING

import msgspec

from gatewayd.errors import BadInputError, ConflictError, NotFoundError

if TYPE_CHECKING:  # the model's StoreDump holds keys: imported for types only
    from gatewayd.control.model import Change

KEY_CHANGE = "key"  # the kind of the change record a key's creation or revocation makes
PERIODS = ("day", "month")
BUDGET_UNITS = ("usd", "tokens")
KEY_PREFIX = "gw-"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")


class Budget(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A spending cap per UTC day or month, in money (the prices' currency) or tokens."""

    amount: float
    unit: str  # "usd" (the prices' currency) | "tokens"
    period: str = "month"  # day | month (UTC)


class RuntimeKey(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str
    tenant: str
    sha256: str  # hex digest of the key: the key itself is shown once, never stored
    created_at: float
    created_by: str
    models: tuple[str, ...] = ()  # model globs the key may use; empty: any
    rpm: int = 0  # requests per minute; 0: none of its own
    budget: Budget | None = None
    revoked_at: float = 0.0
    revoked_by: str = ""
    revoked_reason: str = ""

    @property
    def revoked(self) -> bool:
        return self.revoked_at > 0


def check_name(what: str, value: str) -> None:
    if not _NAME.fullmatch(value):
        raise BadInputError(
            f"{what}: {value!r} must be 1-128 letters, digits or . _ @ - (starting with a letter or digit)"
        )


def parse_models(text: str | None) -> tuple[str, ...]:
    """`'gpt-4o*,mock-*'` -> the globs; empty: any model."""
    if not text:
        return ()
    globs = tuple(g.strip() for g in text.split(",") if g.strip())
    if not globs:
        raise BadInputError("--models: name at least one model glob (e.g. 'gpt-4o*,mock-*')")
    return globs


def make_budget(usd: float | None, tokens: int | None, period: str) -> Budget | None:
    if usd is not None and tokens is not None:
        raise BadInputError("--budget-usd and --budget-tokens: choose one")
    if period not in PERIODS:
        raise BadInputError(f"--period: must be one of {', '.join(PERIODS)}")
    if usd is not None:
        if not usd > 0:
            raise BadInputError("--budget-usd: must be above 0")
        return Budget(float(usd), "usd", period)
    if tokens is not None:
        if tokens <= 0:
            raise BadInputError("--budget-tokens: must be above 0")
        return Budget(float(tokens), "tokens", period)
    return None


def period_of(period: str, now: float) -> tuple[str, float]:
    """(the UTC day or month `now` falls in, as 2026-12-02 or 2026-12; when the next begins)."""
    t = time.gmtime(now)
    if period == "day":
        return time.strftime("%Y-%m-%d", t), calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0)) + 86400
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return time.strftime("%Y-%m", t), calendar.timegm((year, month, 1, 0, 0, 0))


def spend_counter(owner: str, budget: Budget | None, now: float | None = None) -> str:
    """The store counter of `owner` (`key:NAME`, `tenant:NAME`) for its budget's period now."""
    period, _ = period_of(budget.period if budget else "month", time.time() if now is None else now)
    return f"{owner}@{period}"


def model_allowed(globs: tuple[str, ...], model: str) -> bool:
    return not globs or any(fnmatch.fnmatchcase(model, glob) for glob in globs)


def create_key(
    registry,
    *,
    tenant: str,
    name: str,
    actor: str,
    models: tuple[str, ...] = (),
    rpm: int = 0,
    budget: Budget | None = None,
    reason: str = "",
) -> tuple[str, RuntimeKey, Change]:
    """Stores a new key and records its change; returns (the key, shown once; its record;
    the change to wait for at the barrier)."""
    check_name("--tenant", tenant)
    check_name("--name", name)
    if rpm < 0:
        raise BadInputError("--rpm: must not be negative")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = RuntimeKey(
        name,
        tenant,
        hashlib.sha256(secret.encode()).hexdigest(),
        time.time(),
        actor,
        models,
        rpm,
        budget,
    )
    if not registry.add_key(key):
        raise ConflictError(f"a key named {name!r} exists already (names are never reused, revoked ones included)")
    change = registry.key_change(actor, reason or f"create key {name} for tenant {tenant}")
    return secret, key, change


def revoke_key(registry, name: str, *, actor: str, reason: str) -> tuple[RuntimeKey, Change]:
    found = {k.name: k for k in registry.runtime_keys()}.get(name)
    if found is None:
        raise NotFoundError(f"no run-time key named {name!r} (keys in the static TOML are removed from the file)")
    if not found.revoked:
        found = msgspec.structs.replace(found, revoked_at=time.time(), revoked_by=actor, revoked_reason=reason)
        registry.set_key(found)
    change = registry.key_change(actor, f"revoke key {name}: {reason}")
    return found, change
