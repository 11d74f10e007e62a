"""Provider endpoints: where each API's requests go and with which credentials.

The caller's gatewayd key never leaves the gateway; the provider key is added here and
appears nowhere else (not in logs, errors or audit records).
"""

from __future__ import annotations

from collections.abc import Sequence

from gatewayd.config import Provider

API_PATHS = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
    "messages": "/v1/messages",  # Anthropic base URLs, like its SDK's, stop before /v1
}
ANTHROPIC_VERSION = "2023-06-01"
# Client headers that carry API semantics and must reach the provider unchanged.
FORWARDED = {
    "openai": ("openai-beta",),
    "anthropic": ("anthropic-version", "anthropic-beta"),
}
# W3C trace context: passed on as the client sent it (a traced gateway puts its own span in).
TRACE_CONTEXT = ("traceparent", "tracestate")
# Configured provider headers whose value is a credential (Azure's api-key, a custom bearer).
CREDENTIAL_HEADERS = frozenset({"authorization", "api-key", "x-api-key"})


class ProviderEndpoint:
    def __init__(self, name: str, provider: Provider):
        self.name = name
        self.kind = provider.kind
        self.base_url = provider.base_url.rstrip("/")
        key = provider.resolved_key()
        fixed = [("content-type", "application/json"), *provider.headers.items()]
        if self.kind == "anthropic":
            fixed.append(("x-api-key", key))
        elif key:
            fixed.append(("authorization", f"Bearer {key}"))
        self._fixed = fixed
        versioned = [("anthropic-version", ANTHROPIC_VERSION)] if self.kind == "anthropic" else []
        self._plain = (*fixed, *versioned)  # what a request that forwards nothing sends
        # What an error body echoing our credentials would show, to scrub before relaying it.
        credentials = [v.rpartition(" ")[2] for n, v in provider.headers.items() if n.lower() in CREDENTIAL_HEADERS]
        self.secrets = tuple(secret for secret in (key, *credentials) if secret)
        self._forwarded = frozenset(n.encode() for n in (*FORWARDED[self.kind], *TRACE_CONTEXT))

    def url(self, api: str) -> str:
        return self.base_url + API_PATHS[api]

    def headers(self, client_headers: list[tuple[bytes, bytes]]) -> Sequence[tuple[str, str]]:
        """The provider's fixed headers plus the API headers the client chose. Most
        requests choose none and share one tuple: the client only reads it."""
        forwarded = self._forwarded
        chosen = [(name, value) for name, value in client_headers if name in forwarded]
        if not chosen:
            return self._plain
        out = list(self._fixed)
        out += [(name.decode(), value.decode("latin-1")) for name, value in chosen]
        if self.kind == "anthropic" and all(name != b"anthropic-version" for name, _ in chosen):
            out.append(("anthropic-version", ANTHROPIC_VERSION))
        return out
