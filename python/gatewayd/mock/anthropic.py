"""Anthropic dialect: the Messages API, echoing the last user turn, streamed or not.

Stream events follow the documented order (message_start, content_block_start, ping,
content_block_delta..., content_block_stop, message_delta, message_stop), each with its
``event:`` line, because gateways and SDKs dispatch on it.
"""

from __future__ import annotations

import msgspec
from msgspec import UNSET, UnsetType

from .common import (
    ECHO_PREFIX,
    ProviderError,
    check_model,
    count_tokens,
    decode,
    encode,
    new_id,
    split_chunks,
    sse_event,
)
from .config import HeaderGetter, Knobs

# -- request (only the fields the mock looks at) --


class Block(msgspec.Struct):
    type: str
    text: str | None = None


class Message(msgspec.Struct):
    role: str
    content: str | list[Block]


class MessagesRequest(msgspec.Struct):
    model: str
    max_tokens: int
    messages: list[Message]
    system: str | list[Block] | None = None
    stream: bool | None = None


# -- response and stream events --


class TextBlock(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class Usage(msgspec.Struct):
    input_tokens: int
    output_tokens: int


class MessageResponse(msgspec.Struct, kw_only=True, tag="message", tag_field="type"):
    id: str
    role: str = "assistant"
    model: str
    content: list[TextBlock]
    stop_reason: str | None
    stop_sequence: None = None
    usage: Usage | UnsetType = UNSET  # left out only in the altered shape


class _Event(msgspec.Struct, tag_field="type"):
    """Stream events: the tag is both the JSON ``type`` and the SSE ``event:`` name."""


class MessageStart(_Event, tag="message_start"):
    message: MessageResponse


class ContentBlockStart(_Event, tag="content_block_start"):
    index: int
    content_block: TextBlock


class Ping(_Event, tag="ping"):
    pass


class TextDelta(msgspec.Struct, tag="text_delta", tag_field="type"):
    text: str


class ContentBlockDelta(_Event, tag="content_block_delta"):
    index: int
    delta: TextDelta


class ContentBlockStop(_Event, tag="content_block_stop"):
    index: int


class StopDelta(msgspec.Struct):
    stop_reason: str
    stop_sequence: None = None


class OutputUsage(msgspec.Struct):
    output_tokens: int


class MessageDelta(_Event, tag="message_delta"):
    delta: StopDelta
    usage: OutputUsage


class MessageStop(_Event, tag="message_stop"):
    pass


class ErrorDetail(msgspec.Struct):
    type: str
    message: str


class ErrorBody(msgspec.Struct, tag="error", tag_field="type"):
    error: ErrorDetail


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}

_messages = msgspec.json.Decoder(MessagesRequest)


def error_body(status: int, message: str, code: str | None) -> bytes:
    """Anthropic has no error codes, only types; ``code`` is dropped."""
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return encode(ErrorBody(ErrorDetail(kind, message)))


def authenticate(get: HeaderGetter, require_key: str | None) -> None:
    """A key plus ``anthropic-version``, as api.anthropic.com demands them.

    The key may come as ``x-api-key`` or, as recent SDKs send it, as a bearer token.
    """
    scheme, _, token = (get("authorization") or "").partition(" ")
    key = get("x-api-key") or (token.strip() if scheme.lower() == "bearer" else "")
    if not key:
        raise ProviderError(401, "x-api-key header is required")
    if require_key is not None and key != require_key:
        raise ProviderError(401, "invalid x-api-key")
    if not get("anthropic-version"):
        raise ProviderError(400, "anthropic-version: header is required")


def _text(content: str | list[Block]) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(b.text for b in content if b.type == "text" and b.text)


def _event(event: _Event) -> bytes:
    tag = event.__struct_config__.tag
    assert isinstance(tag, str)  # every _Event subclass names its event with a string tag
    return sse_event(tag, event)


def messages(body: bytes, knobs: Knobs) -> bytes | list[bytes]:
    """Reply "echo: <last user turn>" as one message or as an event stream (in the altered
    shape with x-mock-shape: altered, see config.SHAPES)."""
    req: MessagesRequest = decode(_messages, body)
    check_model(req.model)
    last_user = next((m for m in reversed(req.messages) if m.role == "user"), None)
    text = ECHO_PREFIX + (_text(last_user.content) if last_user else "")
    prompt_text = [_text(req.system)] if req.system else []
    prompt_text += [_text(m.content) for m in req.messages]
    input_tokens = sum(count_tokens(t) for t in prompt_text)
    output_tokens = count_tokens(text)
    ident = new_id("msg_")
    altered = knobs.shape == "altered"
    if not req.stream:
        usage: Usage | UnsetType = UNSET if altered else Usage(input_tokens, output_tokens)
        return encode(
            MessageResponse(id=ident, model=req.model, content=[TextBlock(text)], stop_reason="end_turn", usage=usage)
        )
    start = MessageResponse(id=ident, model=req.model, content=[], stop_reason=None, usage=Usage(input_tokens, 1))
    if altered:
        return [
            _event(MessageStart(start)),
            _event(ContentBlockStart(0, TextBlock(""))),
            *(_event(ContentBlockDelta(0, TextDelta(piece))) for piece in split_chunks(text, knobs.chunks)),
            _event(MessageDelta(StopDelta("end_turn"), OutputUsage(output_tokens))),
            _event(ContentBlockStop(0)),
            _event(MessageStop()),
        ]
    return [
        _event(MessageStart(start)),
        _event(ContentBlockStart(0, TextBlock(""))),
        _event(Ping()),
        *(_event(ContentBlockDelta(0, TextDelta(piece))) for piece in split_chunks(text, knobs.chunks)),
        _event(ContentBlockStop(0)),
        _event(MessageDelta(StopDelta("end_turn"), OutputUsage(output_tokens))),
        _event(MessageStop()),
    ]
