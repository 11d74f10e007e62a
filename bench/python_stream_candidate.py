"""The Python candidate for translating streams (issue 14), kept as the figure the shipped
Rust translation (rust/core/src/translate, `_core.StreamTranslator`) was chosen against:
bench/translate_bench.py measures both. Not used by the gateway.

Streams translated event by event as the upstream's chunks arrive: nothing is held
back but a partial event (an SSE event split across chunks).

Anthropic's events (message_start, content_block_start/delta/stop, message_delta,
message_stop) become OpenAI chat completion chunks ending with `data: [DONE]`, and back.
An upstream error event becomes the caller's error event; an event that cannot be
translated raises UpstreamError("protocol"), which the pipeline ends the stream with.
"""

from __future__ import annotations

import time

import msgspec

from gatewayd.server import errors
from gatewayd.translate.responses import FINISH_REASON, STOP_REASON
from gatewayd.upstream import UpstreamError

_encode = msgspec.json.encode
DONE = b"data: [DONE]\n\n"


class _Events:
    """Splits SSE bytes into the data of whole events as they complete (both protocols put
    everything in the data: an Anthropic event's name repeats its data's `type`)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        end = buffer.rfind(b"\n\n")
        if end < 0:
            self._buffer = buffer
            return []
        self._buffer = buffer[end + 2 :]
        found = []
        for raw in buffer[:end].split(b"\n\n"):
            at = raw.find(b"data:")
            if at < 0:
                continue  # a comment or an event without data
            if (at and raw[at - 1] != 10) or raw.count(b"data:") > 1:
                found.append(_data_lines(raw))
                continue
            stop = raw.find(b"\n", at)
            found.append(raw[at + 5 : stop if stop >= 0 else len(raw)].lstrip(b" "))
        return found


def _data_lines(raw: bytes) -> bytes:
    """An event's data lines joined, the general case (several, or after other lines)."""
    return b"\n".join(line[5:].lstrip(b" ") for line in raw.split(b"\n") if line.startswith(b"data:"))


# -- Anthropic events, read --


class _Usage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class _Message(msgspec.Struct):
    id: str
    model: str
    usage: _Usage | None = None


class _Block(msgspec.Struct):
    type: str
    id: str | None = None
    name: str | None = None
    text: str | None = None


class _Delta(msgspec.Struct):
    type: str | None = None
    text: str | None = None
    partial_json: str | None = None
    stop_reason: str | None = None


class _ErrorDetail(msgspec.Struct):
    message: str
    type: str | None = None


class _AnthropicEvent(msgspec.Struct):
    type: str
    message: _Message | None = None
    index: int | None = None
    content_block: _Block | None = None
    delta: _Delta | None = None
    usage: _Usage | None = None
    error: _ErrorDetail | None = None


_anthropic_event = msgspec.json.Decoder(_AnthropicEvent)
# Anthropic error types -> the status an OpenAI client would have seen them with.
_ERROR_STATUS = {"overloaded_error": 503, "rate_limit_error": 429, "api_error": 502, "timeout_error": 504}


class AnthropicToOpenAIStream:
    """An Anthropic event stream as OpenAI chat completion chunks."""

    __slots__ = ("_events", "_prefix", "_tools", "_prompt", "_completion", "include_usage")

    def __init__(self, include_usage: bool = False) -> None:
        self._events = _Events()
        self._prefix = b""  # `data: {"id":...,"model":...,"choices":[{"index":0,` once started
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool call index
        self._prompt = 0
        self._completion = 0
        self.include_usage = include_usage

    def feed(self, chunk: bytes) -> bytes:
        out = []
        for data in self._events.feed(chunk):
            try:
                event = _anthropic_event.decode(data)
            except msgspec.DecodeError as exc:
                raise UpstreamError("protocol", f"an event that is not an Anthropic stream event: {exc}") from None
            out.append(self._translate(event))
        return b"".join(out)

    def _chunk(self, delta: bytes, finish: bytes = b"null") -> bytes:
        return self._prefix + b'"delta":' + delta + b',"finish_reason":' + finish + b',"logprobs":null}]}\n\n'

    def _translate(self, event: _AnthropicEvent) -> bytes:
        kind = event.type
        if kind == "content_block_delta" and event.delta is not None:
            delta = event.delta
            if delta.type == "text_delta":
                return self._chunk(b'{"content":' + _encode(delta.text or "") + b"}")
            if delta.type == "input_json_delta" and event.index in self._tools:
                call = self._tools[event.index]
                arguments = _encode(delta.partial_json or "")
                return self._chunk(b'{"tool_calls":[{"index":%d,"function":{"arguments":%s}}]}' % (call, arguments))
        elif kind == "message_start" and event.message is not None:
            message = event.message
            head = {
                "id": message.id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": message.model,
            }
            self._prefix = b"data: " + _encode(head)[:-1] + b',"choices":[{"index":0,'
            usage = message.usage or _Usage()
            self._prompt = (
                (usage.input_tokens or 0)
                + (usage.cache_creation_input_tokens or 0)
                + (usage.cache_read_input_tokens or 0)
            )
            return self._chunk(b'{"role":"assistant","content":""}')
        elif kind == "content_block_start" and event.content_block is not None:
            block = event.content_block
            if block.type == "text":
                return self._chunk(b'{"content":' + _encode(block.text) + b"}") if block.text else b""
            if block.type == "tool_use" and event.index is not None:
                call = self._tools[event.index] = len(self._tools)
                named = _encode(
                    {
                        "index": call,
                        "id": block.id,
                        "type": "function",
                        "function": {"name": block.name, "arguments": ""},
                    }
                )
                return self._chunk(b'{"tool_calls":[' + named + b"]}")
        elif kind in ("content_block_stop", "ping"):
            return b""
        elif kind == "message_delta":
            if event.usage is not None and event.usage.output_tokens is not None:
                self._completion = event.usage.output_tokens
            if event.delta is not None and event.delta.stop_reason is not None:
                finish = FINISH_REASON.get(event.delta.stop_reason, "stop")
                return self._chunk(b"{}", b'"' + finish.encode() + b'"')
            return b""
        elif kind == "message_stop":
            if not self.include_usage:
                return DONE
            usage = {
                "prompt_tokens": self._prompt,
                "completion_tokens": self._completion,
                "total_tokens": self._prompt + self._completion,
            }
            closing = self._prefix.rpartition(b'"choices":')[0] + b'"choices":[],"usage":' + _encode(usage) + b"}\n\n"
            return closing + DONE
        elif kind == "error" and event.error is not None:
            status = _ERROR_STATUS.get(event.error.type or "", 502)
            return errors.sse_error_event(status, event.error.message, event.error.type or "upstream_error", False)
        raise UpstreamError("protocol", f"an Anthropic stream event that has no OpenAI translation: {kind}")


# -- OpenAI chunks, read --


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCallDelta(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _Function | None = None


class _ChunkDelta(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_ToolCallDelta] | None = None
    refusal: str | None = None


class _Choice(msgspec.Struct):
    delta: _ChunkDelta | None = None
    finish_reason: str | None = None


class _ChunkUsage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Chunk(msgspec.Struct):
    id: str | None = None
    model: str | None = None
    choices: list[_Choice] | None = None
    usage: _ChunkUsage | None = None
    error: _ErrorDetail | None = None


_openai_chunk = msgspec.json.Decoder(_Chunk)


def _event(name: bytes, data: bytes) -> bytes:
    return b"event: " + name + b"\ndata: " + data + b"\n\n"


class OpenAIToAnthropicStream:
    """OpenAI chat completion chunks as an Anthropic event stream."""

    __slots__ = ("_events", "_started", "_block", "_open", "_calls", "_stop", "_usage")

    def __init__(self) -> None:
        self._events = _Events()
        self._started = False
        self._block = -1  # the index of the last content block started
        self._open: str | None = None  # the open block's kind: "text", or "tool:<call index>"
        self._calls: dict[int, int] = {}  # OpenAI tool call index -> Anthropic block index
        self._stop = "end_turn"
        self._usage = _ChunkUsage()

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        for data in self._events.feed(chunk):
            if data == b"[DONE]":
                out.append(self._finish())
                continue
            try:
                parsed = _openai_chunk.decode(data)
            except msgspec.DecodeError as exc:
                raise UpstreamError("protocol", f"a chunk that is not an OpenAI chat completion chunk: {exc}") from None
            self._translate(parsed, out)
        return b"".join(out)

    def _start(self, chunk: _Chunk, out: list[bytes]) -> None:
        self._started = True
        message = {
            "id": chunk.id or "msg_gatewayd",
            "type": "message",
            "role": "assistant",
            "model": chunk.model or "",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        out.append(_event(b"message_start", _encode({"type": "message_start", "message": message})))

    def _close(self, out: list[bytes]) -> None:
        if self._open is not None:
            out.append(_event(b"content_block_stop", b'{"type":"content_block_stop","index":%d}' % self._block))
            self._open = None

    def _open_block(self, kind: str, block: dict, out: list[bytes]) -> None:
        self._close(out)
        self._block += 1
        self._open = kind
        start = {"type": "content_block_start", "index": self._block, "content_block": block}
        out.append(_event(b"content_block_start", _encode(start)))

    def _translate(self, chunk: _Chunk, out: list[bytes]) -> None:
        if chunk.error is not None:
            status = 429 if chunk.error.type == "requests" else 502
            out.append(errors.sse_error_event(status, chunk.error.message, "upstream_error", True))
            return
        if not self._started:
            self._start(chunk, out)
        if chunk.usage is not None:
            self._usage = chunk.usage
        for choice in chunk.choices or ():
            delta = choice.delta
            if delta is not None:
                if delta.content:
                    if self._open != "text":
                        self._open_block("text", {"type": "text", "text": ""}, out)
                    text = {
                        "type": "content_block_delta",
                        "index": self._block,
                        "delta": {"type": "text_delta", "text": delta.content},
                    }
                    out.append(_event(b"content_block_delta", _encode(text)))
                for call in delta.tool_calls or ():
                    self._tool_call(call, out)
            if choice.finish_reason is not None:
                self._close(out)
                self._stop = STOP_REASON.get(choice.finish_reason, "end_turn")

    def _tool_call(self, call: _ToolCallDelta, out: list[bytes]) -> None:
        function = call.function or _Function()
        if call.index not in self._calls:
            if call.id is None or function.name is None:
                raise UpstreamError("protocol", f"tool call {call.index} began without its id and name")
            self._open_block(
                f"tool:{call.index}", {"type": "tool_use", "id": call.id, "name": function.name, "input": {}}, out
            )
            self._calls[call.index] = self._block
        elif self._open != f"tool:{call.index}":
            raise UpstreamError("protocol", f"tool call {call.index} went on after another began")
        if function.arguments:
            delta = {"type": "input_json_delta", "partial_json": function.arguments}
            event = {"type": "content_block_delta", "index": self._calls[call.index], "delta": delta}
            out.append(_event(b"content_block_delta", _encode(event)))

    def _finish(self) -> bytes:
        out: list[bytes] = []
        if not self._started:
            self._start(_Chunk(), out)
        self._close(out)
        usage = {"input_tokens": self._usage.prompt_tokens, "output_tokens": self._usage.completion_tokens}
        delta = {"type": "message_delta", "delta": {"stop_reason": self._stop, "stop_sequence": None}, "usage": usage}
        out.append(_event(b"message_delta", _encode(delta)))
        out.append(_event(b"message_stop", b'{"type":"message_stop"}'))
        return b"".join(out)
