"""Caller authentication: gatewayd API keys, stored as SHA-256 digests, map to callers (a
tenant, the key's name and its limits). Keys come from the static TOML (they keep working)
and from the control store (created and revoked at run time, gatewayd.control.keys)."""

from __future__ import annotations

import hashlib

import msgspec

from gatewayd.config import CallerKey
from gatewayd.control.keys import Budget, RuntimeKey

BEARER = b"bearer "
# Header values already found valid, kept so a caller's next request costs a dict lookup
# instead of a SHA-256: bounded, since a valid key can be spelt many ways (whitespace,
# the case of "Bearer").
KNOWN_LIMIT = 4096


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
        self._known: dict[tuple[bytes, bytes], Caller] = {}  # (header, value) -> caller, valid ones only

    def use_runtime_keys(self, keys: list[RuntimeKey]) -> None:
        """Serves the run-time keys that are not revoked beside the static ones (called by
        the replica agent before it acknowledges a key change). The header values found
        valid are forgotten with the old table, so a revoked key is never recalled."""
        callers = {
            bytes.fromhex(k.sha256): Caller(k.tenant, k.name, k.models, k.rpm, k.budget, True)
            for k in keys
            if not k.revoked
        }
        self._callers, self._known = {**callers, **self._static}, {}

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
        # Read before the table: a swap in between only loses this entry, never keeps a
        # revoked key's (the agent swaps both before it acknowledges).
        known = self._known
        found = known.get((name, value))
        if found is not None:
            return found
        key = value
        if name == b"authorization":
            if key[:7].lower() != BEARER:
                return None
            key = key[7:]
        caller = self._callers.get(hashlib.sha256(key.strip()).digest())
        if caller is not None:
            if len(known) >= KNOWN_LIMIT:
                known.clear()
            known[name, value] = caller
        return caller
