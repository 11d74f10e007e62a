"""Mock behaviour: process-wide defaults, overridden per request by ``x-mock-*`` headers.

The defaults travel to granian's worker processes through one environment variable, so
they reach the app whatever start method granian uses for its workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import msgspec

CONFIG_ENV = "GATEWAYD_MOCK_CONFIG"

HeaderGetter = Callable[[str], str | None]
"""Looks up one request header by lowercase name (granian's ``scope.headers.get``)."""


class MockConfig(msgspec.Struct, frozen=True, kw_only=True):
    latency_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    error_rate: float = 0.0
    chunks: int = 8
    require_key: str | None = None  # None: any non-empty key is accepted

    def to_env(self) -> str:
        return msgspec.json.encode(self).decode()

    @classmethod
    def from_env(cls) -> MockConfig:
        raw = os.environ.get(CONFIG_ENV)
        return msgspec.json.decode(raw, type=cls) if raw else cls()


class Knobs(msgspec.Struct, frozen=True):
    """How one request is to be answered, after headers have overridden the defaults."""

    latency: float  # seconds before the response starts
    chunk_delay: float  # seconds between stream events
    chunks: int  # content pieces in a stream
    status: int | None  # forced error status
    error_rate: float  # probability of a random 500
    fault: str | None  # one of FAULTS: answer as a broken provider would
    shape: str  # one of SHAPES: "altered" answers in another (still parseable) response shape


# x-mock-fault, after auth passed: "truncate" (a stream stops after two events without its
# last one, a whole answer halfway), "invalid-json" (a 200 of HTML with a NUL byte, sent as
# JSON), "echo-key" (a 401 quoting the key it was sent), "empty-error" (errors with an empty
# body: a 500 unless x-mock-status names another status).
FAULTS = frozenset({"truncate", "invalid-json", "echo-key", "empty-error"})

# x-mock-shape: "standard" (the default), or "altered": well-formed answers in another
# shape, as a provider with another response contract would send (docs/ROLLBACK.md R11).
# Chat: no `usage`, `message.content` a list of text parts, stream chunks carrying
# `delta.text` instead of `delta.content` and no usage chunk. Messages: no `usage`, and
# streams without `ping`, with `message_delta` before `content_block_stop`.
SHAPES = frozenset({"standard", "altered"})


class KnobError(ValueError):
    """A malformed ``x-mock-*`` header: a test bug, reported as a 400."""


def _parse(get: HeaderGetter, name: str, kind: type, default, low, high):
    raw = get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise KnobError(f"{name}: not a number: {raw!r}") from None
    if not low <= value <= high:
        raise KnobError(f"{name}: {value} outside [{low}, {high}]")
    return value


def resolve_knobs(config: MockConfig, get: HeaderGetter) -> Knobs:
    """Merge the process defaults with the request's headers (``get`` looks one up)."""
    latency = _parse(get, "x-mock-latency-ms", float, config.latency_ms, 0.0, 3_600_000.0)
    delay = _parse(get, "x-mock-chunk-delay-ms", float, config.chunk_delay_ms, 0.0, 3_600_000.0)
    return Knobs(
        latency=latency / 1000.0,
        chunk_delay=delay / 1000.0,
        chunks=_parse(get, "x-mock-chunks", int, config.chunks, 1, 100_000),
        status=_parse(get, "x-mock-status", int, None, 400, 599),
        error_rate=_parse(get, "x-mock-error-rate", float, config.error_rate, 0.0, 1.0),
        fault=_fault(get("x-mock-fault")),
        shape=_shape(get("x-mock-shape")),
    )


def _fault(raw: str | None) -> str | None:
    if raw is not None and raw not in FAULTS:
        raise KnobError(f"x-mock-fault: {raw!r} is not one of {', '.join(sorted(FAULTS))}")
    return raw


def _shape(raw: str | None) -> str:
    if raw is None:
        return "standard"
    if raw not in SHAPES:
        raise KnobError(f"x-mock-shape: {raw!r} is not one of {', '.join(sorted(SHAPES))}")
    return raw
