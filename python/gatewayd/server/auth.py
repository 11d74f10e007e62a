"""Caller authentication: gatewayd API keys, stored as SHA-256 digests, map to callers (a
tenant, the key's name and its limits). Keys come from the static TOML (they keep working)
and from the control store (created and revoked at run time, gatewayd.control.keys)."""

from __future__ import annotations

import msgspec

from gatewayd import _core
from gatewayd.config import CallerKey
from gatewayd.control.keys import Budget, RuntimeKey


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
    """The callers by key digest, in the core's table (`_core.KeyTable`), which remembers
    the header values it found valid: a caller's next request costs a lookup, no SHA-256.
    The pipeline's header scan authenticates with `keys` in the same pass."""

    def __init__(self, keys: list[CallerKey]):
        self._static = static_callers(keys)
        self.keys = _core.KeyTable(self._static)

    def use_runtime_keys(self, keys: list[RuntimeKey]) -> None:
        """Serves the run-time keys that are not revoked beside the static ones (called by
        the replica agent before it acknowledges a key change). The table is replaced
        whole, and the header values it found valid go with it, so a revoked key is never
        recalled."""
        callers = {
            bytes.fromhex(k.sha256): Caller(k.tenant, k.name, k.models, k.rpm, k.budget, True)
            for k in keys
            if not k.revoked
        }
        self.keys.replace({**callers, **self._static})

    def tenant(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        """The caller's tenant from `Authorization: Bearer` (OpenAI SDKs) or `x-api-key`
        (Anthropic SDKs); None when the key is missing or unknown."""
        for name, value in headers:
            if name == b"authorization" or name == b"x-api-key":
                caller = self.keys.caller_for(name, value)
                return caller.tenant if caller else None
        return None
