"""Caller authentication: gatewayd API keys, stored as SHA-256 digests, map to tenants."""

from __future__ import annotations

import hashlib

from gatewayd.config import CallerKey

BEARER = b"bearer "


class Authenticator:
    def __init__(self, keys: list[CallerKey]):
        self._tenants = {bytes.fromhex(k.sha256): k.tenant for k in keys}

    def tenant(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        """The caller's tenant from `Authorization: Bearer` (OpenAI SDKs) or `x-api-key`
        (Anthropic SDKs); None when the key is missing or unknown."""
        for name, value in headers:
            if name == b"authorization" or name == b"x-api-key":
                return self.tenant_for(name, value)
        return None

    def tenant_for(self, name: bytes, value: bytes) -> str | None:
        """The tenant for one credential header, for callers that scan the headers anyway."""
        if name == b"authorization":
            if value[:7].lower() != BEARER:
                return None
            value = value[7:]
        return self._tenants.get(hashlib.sha256(value.strip()).digest())
