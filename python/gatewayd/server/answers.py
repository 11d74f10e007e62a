"""What the pipeline answers with: the upstream's answer checked (a stream's last event,
an error's shape, a failure that sends the request to a fallback) and scrubbed of
provider keys. (The headers every answer carries are the admission's, built in Rust.)"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable

import msgspec

from gatewayd.server.asgi import JSON
from gatewayd.upstream import UpstreamError

# Provider answers that send a request on to the next fallback (529: Anthropic overloaded).
FAILOVER_STATUSES = frozenset({429, 500, 502, 503, 504, 529})


def answering(adm, via) -> str:
    """The name of the upstream whose answer (or failure) the client gets."""
    tried = via[0]
    return adm.provider if tried == 0 else adm.fallbacks[tried - 1].provider


def ends_with_last_event(tail: bytes, anthropic: bool) -> bool:
    """Whether a stream's last bytes are its protocol's last event, whole (its last line
    ended): OpenAI's last line is `data: [DONE]`; Anthropic's last two are `event:
    message_stop` and its data line. Looked at once, when the stream ends, so an event
    split across chunks is seen whole and the chunks are never scanned as they pass."""
    if not tail.endswith(b"\n"):
        return False
    lines = tail.rstrip().rsplit(b"\n", 2)
    if anthropic:
        return len(lines) == 3 and _field(lines[1], b"event:") == b"message_stop" and lines[2].startswith(b"data:")
    return _field(lines[-1], b"data:") == b"[DONE]"


def _field(line: bytes, name: bytes) -> bytes | None:
    """An SSE line's value for field `name` (the optional space and a CR stripped)."""
    return line[len(name) :].strip() if line.startswith(name) else None


class _ErrorDetail(msgspec.Struct):
    message: str


class _OpenAIError(msgspec.Struct):
    error: _ErrorDetail


class _AnthropicError(msgspec.Struct, tag="error", tag_field="type"):
    error: _ErrorDetail


_error_shapes: dict[bool, msgspec.json.Decoder[_OpenAIError] | msgspec.json.Decoder[_AnthropicError]] = {
    False: msgspec.json.Decoder(_OpenAIError),
    True: msgspec.json.Decoder(_AnthropicError),
}


def is_error_shaped(payload: bytes, anthropic: bool) -> bool:
    """Whether an upstream error body is already what the API's SDKs read an error from."""
    try:
        _error_shapes[anthropic].decode(payload)
    except msgspec.DecodeError:
        return False
    return True


def scrubber(secrets: Iterable[str]) -> Callable[[bytes], bytes]:
    """Replaces every configured provider credential in a body with [REDACTED] (longest
    first, so a key that contains another is replaced whole)."""
    ordered = sorted({secret.encode() for secret in secrets}, key=len, reverse=True)
    if not ordered:
        return lambda body: body
    return functools.partial(re.compile(b"|".join(map(re.escape, ordered))).sub, b"[REDACTED]")


def failure_of(upstream) -> str | None:
    """Why a provider failed a request before answering it, or None if it answered."""
    if isinstance(upstream, UpstreamError):
        return str(upstream)
    if upstream.status in FAILOVER_STATUSES:
        return f"status {upstream.status}"
    return None


def content_type_of(headers: list[tuple[bytes, bytes]]) -> bytes:
    for name, value in headers:
        if name == b"content-type":
            return value
    return JSON
