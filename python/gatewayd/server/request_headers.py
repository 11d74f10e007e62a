"""What the pipeline reads from a request's headers (one pass, in Rust), and the cache mode
asked for. (The headers policy rules read are picked out in Rust too, at admission.)"""

from __future__ import annotations

from gatewayd import _core
from gatewayd.control.documents import CacheSettings
from gatewayd.upstream.providers import FORWARDED

# Request headers forwarded to providers that change what they answer (API version,
# betas): a cached answer serves only requests that sent the same ones.
ANSWER_CHANGING = frozenset(name.encode() for names in FORWARDED.values() for name in names)


# One pass over a request's headers for everything the pipeline acts on: the caller (its
# credential looked up in the key table given), length, the request id (the caller's when
# sane: 1-128 bytes of printable ASCII; else a fresh one), cache ask, sticky id, transfer
# codings and the answer-changing headers.
scan = _core.HeaderScanner(sorted(ANSWER_CHANGING)).scan


def cache_mode(asked: bytes | None, cache: CacheSettings) -> _core.CacheMode:
    """Config decides whether caching may happen; the `x-gatewayd-cache` header can ask
    for it (`use`) or opt out (`bypass`)."""
    if not cache.enabled or cache.mode == "off" or asked == b"bypass":
        return _core.CacheMode.OFF
    if asked == b"use":
        return _core.CacheMode.FORCED
    return _core.CacheMode.DETERMINISTIC if cache.mode == "deterministic" else _core.CacheMode.OFF
