"""Pieces both provider dialects share: echo text, token counts, ids, SSE framing, errors."""

from __future__ import annotations

import secrets
import time

import msgspec

ECHO_PREFIX = "echo: "

# Listed by GET /v1/models; any other model name is accepted too, except "unknown*".
KNOWN_MODELS = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
)

_json_encode = msgspec.json.Encoder().encode


class ProviderError(Exception):
    """A failure the handler wants rendered as an error body in its provider's shape."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def decode(decoder: msgspec.json.Decoder, body: bytes):
    """Decode a request body, turning schema problems into the provider's 400."""
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as exc:  # ValidationError is a subclass
        raise ProviderError(400, str(exc)) from None


def check_model(model: str) -> None:
    """Let tests provoke an upstream 404 by naming a model ``unknown...``."""
    if model.startswith("unknown"):
        raise ProviderError(404, f"The model `{model}` does not exist", "model_not_found")


def count_tokens(text: str) -> int:
    """Whitespace word count: crude, but deterministic so tests can predict usage."""
    return len(text.split())


def split_chunks(text: str, n: int) -> list[str]:
    """Cut ``text`` into exactly ``n`` contiguous pieces (trailing ones may be empty)."""
    size, extra = divmod(len(text), n)
    pieces = []
    start = 0
    for i in range(n):
        end = start + size + (i < extra)
        pieces.append(text[start:end])
        start = end
    return pieces


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def now() -> int:
    return int(time.time())


def encode(obj: object) -> bytes:
    return _json_encode(obj)


def sse_data(obj: object) -> bytes:
    """One OpenAI-style SSE event (data line only)."""
    return b"data: " + _json_encode(obj) + b"\n\n"


def sse_event(event: str, obj: object) -> bytes:
    """One Anthropic-style SSE event (named event plus data line)."""
    return b"event: " + event.encode() + b"\ndata: " + _json_encode(obj) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"
