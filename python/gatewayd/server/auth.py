"""Caller authentication: gatewayd API keys, stored as SHA-256 digests, map to callers (a
tenant, the key's name and its limits). Keys come from the static TOML (they keep working)
and from the control store (created and revoked at run time, gatewayd.control.keys)."""

from __future__ import annotations

import hashlib

import msgspec

from gatewayd.config import CallerKey
from gatewayd.control.keys import Budget, RuntimeKey

BEARER = b"bearer "


class Caller(msgspec.Struct, frozen=True):
    """Who a request comes from: its tenant and key, and what the key may do."""

    tenant: str
    key: str  # the key's name: a run-time key's own, `static:<first 8 hex of its hash>` else
    models: tuple[str, ...] = ()  # model globs the key may use; empty: any
    rpm: int = 0  # requests per minute for this key; 0: no limit of its own
    budget: Budget | None = None  # the key's own spending cap
    runtime: bool = False  # a run-time key: its spend is counted in the store (`keys list`)


def static_callers(keys: list[CallerKey]) -> dict[bytes, Caller]:
    return {bytes.fromhex(k.sha256): Caller(k.tenant, k.name or f"static:{k.sha256[:8]}") for k in keys}


class Authenticator:
    def __init__(self, keys: list[CallerKey]):
        self._static = static_callers(keys)
        self._callers = self._static

    def use_runtime_keys(self, keys: list[RuntimeKey]) -> None:
        """Serves the run-time keys that are not revoked beside the static ones (called by
        the replica agent before it acknowledges a key change): one assignment, so a
        request sees the old table or the new one."""
        callers = {
            bytes.fromhex(k.sha256): Caller(k.tenant, k.name, k.models, k.rpm, k.budget, True)
            for k in keys
            if not k.revoked
        }
        self._callers = {**callers, **self._static}

    def tenant(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        """The caller's tenant from `Authorization: Bearer` (OpenAI SDKs) or `x-api-key`
        (Anthropic SDKs); None when the key is missing or unknown."""
        for name, value in headers:
            if name == b"authorization" or name == b"x-api-key":
                caller = self.caller_for(name, value)
                return caller.tenant if caller else None
        return None

    def caller_for(self, name: bytes, value: bytes) -> Caller | None:
        """The caller for one credential header, for callers that scan the headers anyway."""
        if name == b"authorization":
            if value[:7].lower() != BEARER:
                return None
            value = value[7:]
        return self._callers.get(hashlib.sha256(value.strip()).digest())
