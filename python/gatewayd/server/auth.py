"""Caller authentication: gatewayd API keys, stored as SHA-256 digests, map to tenants."""

from __future__ import annotations

import hashlib

from gatewayd.config import CallerKey

BEARER = b"bearer "
# Header values already found valid, kept so a caller's next request costs a dict lookup
# instead of a SHA-256: bounded, since a valid key can be spelt many ways (whitespace,
# the case of "Bearer").
KNOWN_LIMIT = 4096


class Authenticator:
    def __init__(self, keys: list[CallerKey]):
        self._tenants = {bytes.fromhex(k.sha256): k.tenant for k in keys}
        self._known: dict[tuple[bytes, bytes], str] = {}  # (header, value) -> tenant, valid ones only

    def tenant(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        """The caller's tenant from `Authorization: Bearer` (OpenAI SDKs) or `x-api-key`
        (Anthropic SDKs); None when the key is missing or unknown."""
        for name, value in headers:
            if name == b"authorization" or name == b"x-api-key":
                return self.tenant_for(name, value)
        return None

    def tenant_for(self, name: bytes, value: bytes) -> str | None:
        """The tenant for one credential header, for callers that scan the headers anyway."""
        known = self._known.get((name, value))
        if known is not None:
            return known
        key = value
        if name == b"authorization":
            if key[:7].lower() != BEARER:
                return None
            key = key[7:]
        tenant = self._tenants.get(hashlib.sha256(key.strip()).digest())
        if tenant is not None:
            if len(self._known) >= KNOWN_LIMIT:
                self._known.clear()
            self._known[name, value] = tenant
        return tenant
