"""Anthropic dialect: the Messages API, echoing the last user turn, streamed or not.

Stream events follow the documented order (message_start, content_block_start, ping,
content_block_delta..., content_block_stop, message_delta, message_stop), each with its
``event:`` line, because gateways and SDKs dispatch on it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Annotated, Literal

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

# -- request: every field of the Messages API this mock knows; any other is a 400, as there,
# so a gateway's translation that sends one fails here --


class _Strict(msgspec.Struct, forbid_unknown_fields=True):
    pass


class TextIn(_Strict, tag="text", tag_field="type"):
    text: str
    cache_control: dict | None = None


class Base64Source(_Strict, tag="base64", tag_field="type"):
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str


class URLSource(_Strict, tag="url", tag_field="type"):
    url: str


class ImageIn(_Strict, tag="image", tag_field="type"):
    source: Base64Source | URLSource
    cache_control: dict | None = None


class ToolUseIn(_Strict, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: dict
    cache_control: dict | None = None


class ToolResultIn(_Strict, tag="tool_result", tag_field="type"):
    tool_use_id: str
    content: str | list[TextIn | ImageIn] = ""
    is_error: bool | None = None
    cache_control: dict | None = None


Block = TextIn | ImageIn | ToolUseIn | ToolResultIn


class Message(_Strict):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolIn(_Strict):
    name: str
    input_schema: dict
    description: str | None = None
    type: Literal["custom"] | None = None
    cache_control: dict | None = None


class ToolChoice(_Strict):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class JsonFormat(_Strict):
    type: Literal["json_schema"]
    schema: dict


class OutputConfig(_Strict):
    format: JsonFormat | None = None
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None


class Metadata(_Strict):
    user_id: str | None = None


class MessagesRequest(_Strict):
    model: str
    max_tokens: Annotated[int, msgspec.Meta(ge=1)]
    messages: list[Message]
    system: str | list[TextIn] | None = None
    stream: bool | None = None
    stop_sequences: list[str] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    top_k: int | None = None
    tools: list[ToolIn] | None = None
    tool_choice: ToolChoice | None = None
    metadata: Metadata | None = None
    thinking: dict | None = None
    output_config: OutputConfig | None = None
    service_tier: str | None = None


# -- response and stream events --


class TextBlock(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class ToolUseBlock(msgspec.Struct, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: dict


class Usage(msgspec.Struct):
    input_tokens: int
    output_tokens: int


class MessageResponse(msgspec.Struct, kw_only=True, tag="message", tag_field="type"):
    id: str
    role: str = "assistant"
    model: str
    content: list[TextBlock | ToolUseBlock]
    stop_reason: str | None
    stop_sequence: None = None
    usage: Usage | UnsetType = UNSET  # left out only in the altered shape


class _Event(msgspec.Struct, tag_field="type"):
    """Stream events: the tag is both the JSON ``type`` and the SSE ``event:`` name."""


class MessageStart(_Event, tag="message_start"):
    message: MessageResponse


class ContentBlockStart(_Event, tag="content_block_start"):
    index: int
    content_block: TextBlock | ToolUseBlock


class Ping(_Event, tag="ping"):
    pass


class TextDelta(msgspec.Struct, tag="text_delta", tag_field="type"):
    text: str


class InputJsonDelta(msgspec.Struct, tag="input_json_delta", tag_field="type"):
    partial_json: str


class ContentBlockDelta(_Event, tag="content_block_delta"):
    index: int
    delta: TextDelta | InputJsonDelta


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


def _text(content: str | Sequence[Block]) -> str:
    """What the mock echoes of a turn: its text, a marker per image, and tool results."""
    if isinstance(content, str):
        return content
    said = []
    for b in content:
        if isinstance(b, TextIn):
            said.append(b.text)
        elif isinstance(b, ImageIn):
            source = b.source
            said.append(f"[image {source.media_type}]" if isinstance(source, Base64Source) else f"[image {source.url}]")
        elif isinstance(b, ToolResultIn):
            said.append(f"[tool {b.tool_use_id} said: {_text(b.content)}]")
    return "\n".join(said)


def _check(req: MessagesRequest) -> None:
    """What the real API refuses beyond the shape: undecodable images, and tool results
    that answer no tool_use of the assistant turn before them."""
    offered: set[str] = set()
    for i, m in enumerate(req.messages):
        blocks = [] if isinstance(m.content, str) else m.content
        for j, b in enumerate(blocks):
            at = f"messages.{i}.content.{j}"
            if isinstance(b, ImageIn) and isinstance(b.source, Base64Source):
                try:
                    base64.b64decode(b.source.data, validate=True)
                except binascii.Error:
                    raise ProviderError(400, f"{at}.source.data: invalid base64 data") from None
            if isinstance(b, ToolResultIn) and b.tool_use_id not in offered:
                raise ProviderError(
                    400, f"{at}: unexpected `tool_use_id` found in `tool_result` blocks: {b.tool_use_id}"
                )
        offered = {b.id for b in blocks if isinstance(b, ToolUseIn)}
        if m.role == "assistant" and any(isinstance(b, ToolResultIn) for b in blocks):
            raise ProviderError(400, f"messages.{i}: tool_result blocks belong in user turns")


def _tool_call(req: MessagesRequest, last: Message | None) -> ToolUseBlock | None:
    """With tools offered (and not refused by tool_choice) and a user turn that is not a
    tool result, the mock calls the chosen tool, else the first, with the turn's text."""
    if not req.tools or last is None or (req.tool_choice is not None and req.tool_choice.type == "none"):
        return None
    if not isinstance(last.content, str) and any(isinstance(b, ToolResultIn) for b in last.content):
        return None
    name = req.tool_choice.name if req.tool_choice and req.tool_choice.type == "tool" else None
    return ToolUseBlock(new_id("toolu_"), name or req.tools[0].name, {"text": _text(last.content)})


def _event(event: _Event) -> bytes:
    tag = event.__struct_config__.tag
    assert isinstance(tag, str)  # every _Event subclass names its event with a string tag
    return sse_event(tag, event)


def messages(body: bytes, knobs: Knobs) -> bytes | list[bytes]:
    """Reply "echo: <last user turn>" as one message or as an event stream (in the altered
    shape with x-mock-shape: altered, see config.SHAPES); with tools, a call of one."""
    req: MessagesRequest = decode(_messages, body)
    check_model(req.model)
    _check(req)
    last_user = next((m for m in reversed(req.messages) if m.role == "user"), None)
    text = ECHO_PREFIX + (_text(last_user.content) if last_user else "")
    if req.output_config is not None and req.output_config.format is not None:  # structured output
        text = encode({"text": text}).decode()
    prompt_text = [_text(req.system)] if req.system else []
    prompt_text += [_text(m.content) for m in req.messages]
    input_tokens = sum(count_tokens(t) for t in prompt_text)
    call = _tool_call(req, last_user)
    output_tokens = count_tokens(text)
    ident = new_id("msg_")
    altered = knobs.shape == "altered"
    if not req.stream:
        usage: Usage | UnsetType = UNSET if altered else Usage(input_tokens, output_tokens)
        content: list[TextBlock | ToolUseBlock] = [call] if call else [TextBlock(text)]
        stop = "tool_use" if call else "end_turn"
        return encode(MessageResponse(id=ident, model=req.model, content=content, stop_reason=stop, usage=usage))
    start = MessageResponse(id=ident, model=req.model, content=[], stop_reason=None, usage=Usage(input_tokens, 1))
    if call is not None:
        arguments = encode(call.input).decode()
        return [
            _event(MessageStart(start)),
            _event(ContentBlockStart(0, ToolUseBlock(call.id, call.name, {}))),
            *(_event(ContentBlockDelta(0, InputJsonDelta(piece))) for piece in split_chunks(arguments, knobs.chunks)),
            _event(ContentBlockStop(0)),
            _event(MessageDelta(StopDelta("tool_use"), OutputUsage(output_tokens))),
            _event(MessageStop()),
        ]
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
