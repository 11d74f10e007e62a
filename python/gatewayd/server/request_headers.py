"""What the pipeline reads from a request's headers, in one pass, and the cache mode asked
for. (The headers policy rules read are picked out in Rust, at admission.)"""

from __future__ import annotations

from gatewayd import _core
from gatewayd.control.documents import CacheSettings
from gatewayd.upstream.providers import FORWARDED

# Request headers forwarded to providers that change what they answer (API version,
# betas): a cached answer serves only requests that sent the same ones.
ANSWER_CHANGING = frozenset(name.encode() for names in FORWARDED.values() for name in names)


class Seen:
    """What the pipeline looks for in the request headers, found in one pass."""

    __slots__ = ("credential", "request_id", "content_length", "cache", "vary", "transfer_encoding", "sticky")

    def __init__(self) -> None:
        self.credential: tuple[bytes, bytes] | None = None
        self.request_id: str | None = None
        self.content_length: int | None = None
        self.cache: bytes | None = None
        self.vary = ""  # the forwarded headers that change the answer: part of the cache key
        self.transfer_encoding: list[bytes] | None = None  # its header values, when sent
        self.sticky: str | None = None  # who the caller says it is, for canary assignment

    def key(self) -> str:
        """The caller's key as sent in either header (Bearer or x-api-key)."""
        assert self.credential is not None
        name, value = self.credential
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            value = value[7:]
        return value.decode("latin-1").strip()


# Every header scan acts on: the rest (host, content-type, user agents...) are passed
# over with one set lookup.
_SCANNED = frozenset(
    {
        b"authorization",
        b"x-api-key",
        b"content-length",
        b"x-request-id",
        b"x-gatewayd-cache",
        b"x-gatewayd-sticky",
        b"transfer-encoding",
        *ANSWER_CHANGING,
    }
)


def scan(headers: list[tuple[bytes, bytes]]) -> Seen:
    seen = Seen()
    for name, value in headers:
        if name not in _SCANNED:
            continue
        if name == b"authorization" or name == b"x-api-key":
            if seen.credential is None:
                seen.credential = (name, value)
        elif name == b"content-length":
            seen.content_length = int(value) if value.isdigit() else None
        elif name == b"x-request-id":
            # The caller's id when it is sane (so traces join up); else a fresh one from the
            # per-process Mersenne Twister (reseeded at fork): ids must be unique, not secret,
            # and os.urandom is a syscall costing ~8 us here.
            if seen.request_id is None and 0 < len(value) <= 128 and all(32 < c < 127 for c in value):
                seen.request_id = value.decode()
        elif name == b"x-gatewayd-cache":
            seen.cache = value.lower()
        elif name == b"x-gatewayd-sticky":
            seen.sticky = value.decode("latin-1")
        elif name == b"transfer-encoding":
            if seen.transfer_encoding is None:
                seen.transfer_encoding = []
            seen.transfer_encoding.append(value)
        elif name in ANSWER_CHANGING:
            seen.vary += f"{name.decode()}:{value.decode('latin-1')}\n"
    return seen


def cache_mode(asked: bytes | None, cache: CacheSettings) -> _core.CacheMode:
    """Config decides whether caching may happen; the `x-gatewayd-cache` header can ask
    for it (`use`) or opt out (`bypass`)."""
    if not cache.enabled or cache.mode == "off" or asked == b"bypass":
        return _core.CacheMode.OFF
    if asked == b"use":
        return _core.CacheMode.FORCED
    return _core.CacheMode.DETERMINISTIC if cache.mode == "deterministic" else _core.CacheMode.OFF
