"""Token usage on every answer, in neutral counts whatever protocol the provider spoke (the
engine prices it under the request's config version when it records it).

Read from the provider's own protocol (so it composes with translation between APIs):
OpenAI's `usage` (a whole answer's, or a stream's last chunk, which the gateway asks for
with `stream_options.include_usage` and strips from the stream of a client that did not
ask), Anthropic's `usage` in `message_start` and `message_delta`. A whole answer's usage
comes out of the decode that checks it is a JSON object anyway; a stream's is read once,
at its end, from its first and last bytes, so chunks are never parsed as they pass.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

# A stream's first bytes kept for Anthropic's message_start, and its last bytes (the
# pipeline's tail) for the usage chunk or message_delta: room for each event whole.
STREAM_HEAD = 2048
STREAM_TAIL = 2048
INCLUDE_USAGE = b'{"stream_options":{"include_usage":true},'
_USAGE_KEY = b'"usage"'
_USAGE_MEMBER = b'"usage":'


class Counts(NamedTuple):
    """Neutral token counts: `prompt` includes `cached` (input read from the provider's
    prompt cache, priced apart)."""

    prompt: int
    completion: int
    cached: int = 0


class _Details(msgspec.Struct):
    cached_tokens: int | None = None


class _OpenAIUsage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: _Details | None = None

    def counts(self) -> Counts:
        details = self.prompt_tokens_details
        cached = (details.cached_tokens or 0) if details else 0
        return Counts(self.prompt_tokens or 0, self.completion_tokens or 0, cached)


class _AnthropicUsage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None

    def counts(self) -> Counts:
        cached = self.cache_read_input_tokens or 0
        prompt = (self.input_tokens or 0) + cached + (self.cache_creation_input_tokens or 0)
        return Counts(prompt, self.output_tokens or 0, cached)


class _Answer(msgspec.Struct):
    """Any JSON object, decoded without building it; only its `usage` is kept, raw."""

    usage: msgspec.Raw = msgspec.Raw()  # empty when there is none (Raw is no union member)


class _OpenAIChunk(msgspec.Struct):
    usage: _OpenAIUsage | None = None
    choices: list[msgspec.Raw] = []


class _AnthropicMessage(msgspec.Struct):
    usage: _AnthropicUsage | None = None


class _MessageStart(msgspec.Struct):
    message: _AnthropicMessage


class _MessageDelta(msgspec.Struct):
    usage: _AnthropicUsage | None = None


_answer = msgspec.json.Decoder(_Answer)
_usage_decoders: dict[bool, msgspec.json.Decoder[_OpenAIUsage] | msgspec.json.Decoder[_AnthropicUsage]] = {
    False: msgspec.json.Decoder(_OpenAIUsage),
    True: msgspec.json.Decoder(_AnthropicUsage),
}
_openai_chunk = msgspec.json.Decoder(_OpenAIChunk)
_message_start = msgspec.json.Decoder(_MessageStart)
_message_delta = msgspec.json.Decoder(_MessageDelta)


def read_answer(payload: bytes, anthropic: bool) -> tuple[bool, Counts | None]:
    """(whether a whole answer is a JSON object, its usage if it has one), in one decode
    that does not build the object (0.5 us for a chat completion). Skipped strings are not
    checked for UTF-8 by msgspec, so a body that is not ASCII is decoded once more."""
    try:
        usage = _answer.decode(payload).usage
        if not payload.isascii():
            payload.decode()
    except (msgspec.DecodeError, UnicodeDecodeError):
        return False, None
    return True, _counts(usage, anthropic) if usage else None


def read_error(payload: bytes, anthropic: bool) -> Counts | None:
    """What a provider's error answer says it charged, if it says anything."""
    if _USAGE_KEY not in payload:
        return None
    return read_answer(payload, anthropic)[1]


def _counts(raw: msgspec.Raw, anthropic: bool) -> Counts | None:
    try:
        return _usage_decoders[anthropic].decode(raw).counts()
    except msgspec.DecodeError:
        return None


def read_stream(head: bytes, tail: bytes, anthropic: bool) -> Counts | None:
    """A stream's usage from its first and last bytes: Anthropic's message_start (input)
    overlaid by its last message_delta (output, and input when it repeats it); OpenAI's
    last chunk carrying `usage`. None when the provider sent none, or the stream broke off
    before it."""
    if not anthropic:
        line = _last_data_line(tail, _USAGE_KEY)
        chunk = _decode(_openai_chunk, line)
        return chunk.usage.counts() if chunk is not None and chunk.usage is not None else None
    start = _decode(_message_start, _first_data_line(head, b'"message_start"'))
    delta = _decode(_message_delta, _last_data_line(tail, b'"message_delta"'))
    first = start.message.usage if start is not None else None
    last = delta.usage if delta is not None else None
    if first is None and last is None:
        return None
    merged = _AnthropicUsage()
    for usage in (first, last):
        if usage is not None:
            for field in usage.__struct_fields__:
                value = getattr(usage, field)
                if value:
                    setattr(merged, field, value)
    return merged.counts()


# What one streamed content event looks like in each protocol (Anthropic's, OpenAI's): a
# stream cut short is charged about a token for each relayed (see stopped_counts).
CONTENT_EVENT = {True: b"event: content_block_delta", False: b"data: {"}


def stopped_counts(said: Counts | None, body_bytes: int, events: int) -> tuple[Counts, bool]:
    """The usage to charge a request stopped because its client hung up: what the provider
    said, when it said it all, else an estimate. The provider bills a stopped request's
    prompt and what it generated until then, so a client that stops reading cannot spend
    past its budget: a prompt the provider did not count is taken as a token per 4 bytes
    of the request body (an overestimate: JSON around the text), and the output as a token
    per content event relayed (about what providers stream). Returns (counts, estimated)."""
    if said is not None and said.completion >= events:
        return said, False
    prompt = said.prompt if said is not None and said.prompt else max(1, body_bytes // 4)
    cached = said.cached if said is not None else 0
    return Counts(prompt, events, cached), True


def _decode(decoder, line: bytes | None):
    if line is None:
        return None
    try:
        return decoder.decode(line)
    except msgspec.DecodeError:
        return None


def _last_data_line(data: bytes, marker: bytes) -> bytes | None:
    """The JSON of the last whole `data:` line holding `marker`."""
    return _data_line(data, data.rfind(marker))


def _first_data_line(data: bytes, marker: bytes) -> bytes | None:
    """The JSON of the first whole `data:` line holding `marker`."""
    return _data_line(data, data.find(marker))


def _data_line(data: bytes, at: int) -> bytes | None:
    """The JSON of the whole `data:` line around offset `at` (-1: none)."""
    if at < 0:
        return None
    start, end = data.rfind(b"data:", 0, at), data.find(b"\n", at)
    if start < 0 or end < 0:
        return None
    return data[start + 5 : end]


def ask_for_usage(body: bytes) -> tuple[bytes, bool]:
    """A streamed OpenAI request that asks for the usage chunk, and whether the client
    asked for it itself (then it sees the chunk; else the chunk is stripped)."""
    if b'"stream_options"' not in body:  # the common case: prepend the member
        start = body.find(b"{")
        return body[:start] + INCLUDE_USAGE + body[start + 1 :], False
    request = msgspec.json.decode(body)  # admission parsed it: a JSON object
    options = request.get("stream_options")
    if not isinstance(options, dict):
        options = {}
    if options.get("include_usage") is True:
        return body, True
    request["stream_options"] = {**options, "include_usage": True}
    return msgspec.json.encode(request), False


def client_asked(body: bytes) -> bool:
    """Whether a streamed OpenAI request asks for the usage chunk itself."""
    return b'"stream_options"' in body and ask_for_usage(body)[1]


class UsageStripper:
    """Relays an OpenAI stream without its usage chunk (the one with `usage` and no
    choices), for a client that did not ask for it. Whole events pass at once; only an
    event still arriving is held, and only events holding `"usage"` are decoded."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        if self._pending:
            chunk, self._pending = self._pending + chunk, b""
        if not chunk.endswith(b"\n\n"):  # the usual chunk is whole events: no copy then
            end = chunk.rfind(b"\n\n") + 2
            if end < 2:
                self._pending = chunk
                return b""
            chunk, self._pending = chunk[:end], chunk[end:]
        return strip_usage_events(chunk) if _carries_usage(chunk) else chunk

    def rest(self) -> bytes:
        """What is held when the stream ends (an event the provider never finished)."""
        rest, self._pending = self._pending, b""
        return rest


def _carries_usage(data: bytes) -> bool:
    """Whether the last `"usage":` member in `data` holds an object: every other chunk of a
    stream that asked for usage says `"usage":null`, and the usage chunk comes last. One
    search per chunk, no copy."""
    at = data.rfind(_USAGE_MEMBER)
    if at < 0:
        return False
    at += len(_USAGE_MEMBER)
    end = len(data)
    while at < end and data[at] in b" \t\r\n":
        at += 1
    return at < end and data[at] == 0x7B  # {


def strip_usage_events(data: bytes) -> bytes:
    """`data` (whole SSE events) without OpenAI usage chunks."""
    kept = []
    for event in data.split(b"\n\n"):
        if event.startswith(b"data:") and _carries_usage(event):
            chunk = _decode(_openai_chunk, event[5:])
            if chunk is not None and chunk.usage is not None and not chunk.choices:
                continue
        kept.append(event)
    return b"\n\n".join(kept)
