"""OpenAI dialect: chat completions, completions, embeddings and models, echoing the input.

Replies carry every field the official SDK reads, so the SDK parses them like real ones.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, UnsetType

from .common import (
    ECHO_PREFIX,
    KNOWN_MODELS,
    SSE_DONE,
    ProviderError,
    check_model,
    count_tokens,
    decode,
    encode,
    new_id,
    now,
    split_chunks,
    sse_data,
)
from .config import HeaderGetter, Knobs

FINGERPRINT = "fp_gatewayd_mock"
EMBEDDING_DIMENSIONS = 8

# -- requests (only the fields the mock looks at; the rest is ignored) --


class _Strict(msgspec.Struct, forbid_unknown_fields=True):
    pass


class TextIn(_Strict, tag="text", tag_field="type"):
    text: str


class ImageURL(_Strict):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImageIn(_Strict, tag="image_url", tag_field="type"):
    image_url: ImageURL


class AudioIn(_Strict, tag="input_audio", tag_field="type"):
    input_audio: dict


class FileIn(_Strict, tag="file", tag_field="type"):
    file: dict


class RefusalIn(_Strict, tag="refusal", tag_field="type"):
    refusal: str


ContentPart = TextIn | ImageIn | AudioIn | FileIn | RefusalIn


class FunctionCall(_Strict):
    name: str
    arguments: str  # a JSON document in a string


class ToolCall(_Strict):
    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    audio: dict | None = None
    function_call: dict | None = None


class StreamOptions(_Strict):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class FunctionDef(_Strict):
    name: str
    description: str | None = None
    parameters: dict | None = None
    strict: bool | None = None


class ToolDef(_Strict):
    function: FunctionDef
    type: Literal["function"] = "function"


class NamedFunction(_Strict):
    name: str


class NamedTool(_Strict):
    function: NamedFunction
    type: Literal["function"] = "function"


class ChatRequest(_Strict):
    """Every request field of the Chat Completions API: an unknown one is a 400, as there
    ("Unrecognized request argument supplied"), so a gateway translation that invents one
    fails here."""

    model: str
    messages: list[ChatMessage]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    n: int | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    user: str | None = None
    seed: int | None = None
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedTool | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict | None = None
    metadata: dict | None = None
    store: bool | None = None
    service_tier: str | None = None
    modalities: list[str] | None = None
    audio: dict | None = None
    prediction: dict | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    web_search_options: dict | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    functions: list | None = None
    function_call: str | dict | None = None


class CompletionRequest(msgspec.Struct):
    model: str
    prompt: str | list = ""
    stream: bool | None = None
    stream_options: StreamOptions | None = None


class EmbeddingRequest(msgspec.Struct):
    model: str
    input: str | list
    encoding_format: str = "float"
    dimensions: int | None = None


# -- responses --


class Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TextPart(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class FunctionOut(msgspec.Struct):
    name: str
    arguments: str


class ToolCallOut(msgspec.Struct):
    id: str
    function: FunctionOut
    type: str = "function"


class AssistantMessage(msgspec.Struct):
    content: str | list[TextPart] | None  # a list only in the altered shape (x-mock-shape)
    role: str = "assistant"
    refusal: None = None
    tool_calls: list[ToolCallOut] | UnsetType = UNSET  # only when the model calls a tool


class ChatChoice(msgspec.Struct):
    message: AssistantMessage
    finish_reason: str = "stop"
    index: int = 0
    logprobs: None = None


class ChatCompletion(msgspec.Struct, kw_only=True):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | UnsetType = UNSET  # left out only in the altered shape
    system_fingerprint: str = FINGERPRINT


class FunctionDelta(msgspec.Struct, omit_defaults=True):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(msgspec.Struct, omit_defaults=True):
    index: int
    id: str | None = None
    type: str | None = None
    function: FunctionDelta | None = None


class Delta(msgspec.Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    text: str | None = None  # instead of content, in the altered shape
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(msgspec.Struct):
    delta: Delta
    finish_reason: str | None = None
    index: int = 0
    logprobs: None = None


class ChatCompletionChunk(msgspec.Struct, kw_only=True):
    id: str
    object: str = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str = FINGERPRINT
    choices: list[ChunkChoice]
    usage: Usage | None | UnsetType = UNSET  # present (null until the end) only if asked for


class CompletionChoice(msgspec.Struct):
    text: str
    finish_reason: str | None = "stop"
    index: int = 0
    logprobs: None = None


class Completion(msgspec.Struct, kw_only=True):
    id: str
    object: str = "text_completion"
    created: int
    model: str
    system_fingerprint: str = FINGERPRINT
    choices: list[CompletionChoice]
    usage: Usage | None | UnsetType = UNSET


class Embedding(msgspec.Struct):
    index: int
    embedding: list[float] | str
    object: str = "embedding"


class EmbeddingUsage(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(msgspec.Struct, kw_only=True):
    object: str = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class Model(msgspec.Struct):
    id: str
    created: int
    owned_by: str
    object: str = "model"


class ModelList(msgspec.Struct):
    data: list[Model]
    object: str = "list"


class ErrorDetail(msgspec.Struct):
    message: str
    type: str
    code: str | None
    param: None = None


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


_chat = msgspec.json.Decoder(ChatRequest)
_completion = msgspec.json.Decoder(CompletionRequest)
_embedding = msgspec.json.Decoder(EmbeddingRequest)

_MODELS = encode(ModelList([Model(m, 1_700_000_000, "gatewayd-mock") for m in KNOWN_MODELS]))


def error_body(status: int, message: str, code: str | None) -> bytes:
    if status == 429:
        kind, code = "requests", code or "rate_limit_exceeded"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "invalid_request_error"
    return encode(ErrorBody(ErrorDetail(message, kind, code)))


def authenticate(get: HeaderGetter, require_key: str | None) -> None:
    """Bearer auth, as api.openai.com demands it."""
    scheme, _, key = (get("authorization") or "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise ProviderError(401, "You didn't provide an API key (Authorization: Bearer <key>).")
    if require_key is not None and key != require_key:
        raise ProviderError(401, "Incorrect API key provided.", "invalid_api_key")


def _message_text(message: ChatMessage) -> str:
    """What the mock echoes of a message: its text, a marker per image, a tool's answer."""
    if message.role == "tool":
        said = message.content if isinstance(message.content, str) else _parts_text(message.content or [])
        return f"[tool {message.tool_call_id} said: {said}]"
    if isinstance(message.content, str):
        return message.content
    return _parts_text(message.content or [])


def _parts_text(parts: list[ContentPart]) -> str:
    said = []
    for p in parts:
        if isinstance(p, TextIn):
            said.append(p.text)
        elif isinstance(p, ImageIn):
            url = p.image_url.url
            said.append(f"[image {url.partition(';')[0][5:]}]" if url.startswith("data:") else f"[image {url}]")
    return "\n".join(said)


def _check(req: ChatRequest) -> None:
    """What the real API refuses beyond the shape: images that are neither http(s) nor
    base64 data URLs, tool-call arguments that are not JSON, and tool messages answering
    no tool call of the assistant message before them."""
    offered: set[str] = set()
    for i, m in enumerate(req.messages):
        for j, p in enumerate(m.content if isinstance(m.content, list) else ()):
            if isinstance(p, ImageIn):
                url = p.image_url.url
                head, _, data = url.partition(";base64,")
                try:
                    if head.startswith("data:image/"):
                        base64.b64decode(data, validate=True)
                    elif not url.startswith(("https://", "http://")):
                        raise binascii.Error
                except binascii.Error:
                    raise ProviderError(400, f"messages[{i}].content[{j}].image_url: Invalid image URL") from None
        for j, call in enumerate(m.tool_calls or ()):
            try:
                msgspec.json.decode(call.function.arguments)
            except msgspec.DecodeError:
                raise ProviderError(400, f"messages[{i}].tool_calls[{j}].function.arguments: not JSON") from None
        if m.role == "tool" and m.tool_call_id not in offered:
            raise ProviderError(400, f"messages[{i}]: a tool message must answer a preceding tool_calls entry")
        if m.role == "assistant":
            offered = {c.id for c in m.tool_calls or ()}


def _tool_call(req: ChatRequest) -> ToolCallOut | None:
    """With tools offered (not refused by tool_choice) and a user message last, the mock
    calls the chosen tool, else the first, with the message's text."""
    if not req.tools or req.tool_choice == "none" or req.messages[-1].role != "user":
        return None
    name = req.tool_choice.function.name if isinstance(req.tool_choice, NamedTool) else req.tools[0].function.name
    arguments = encode({"text": _message_text(req.messages[-1])}).decode()
    return ToolCallOut(new_id("call_"), FunctionOut(name, arguments))


def _usage(prompt: int, completion: int) -> Usage:
    return Usage(prompt, completion, prompt + completion)


def chat(body: bytes, knobs: Knobs) -> bytes | list[bytes]:
    """Reply "echo: <last user message>" as a completion or as an SSE chunk stream (in the
    altered shape with x-mock-shape: altered, see config.SHAPES); with tools, a call of one."""
    req: ChatRequest = decode(_chat, body)
    check_model(req.model)
    _check(req)
    last_user = next((m for m in reversed(req.messages) if m.role == "user"), None)
    last = req.messages[-1] if req.messages else None
    echoed = last if last is not None and last.role == "tool" else last_user
    text = ECHO_PREFIX + (_message_text(echoed) if echoed else "")
    if req.response_format is not None and req.response_format.get("type") in ("json_schema", "json_object"):
        text = encode({"text": text}).decode()  # JSON mode
    usage = _usage(sum(count_tokens(_message_text(m)) for m in req.messages), count_tokens(text))
    ident, created = new_id("chatcmpl-"), now()
    altered = knobs.shape == "altered"
    call = _tool_call(req) if req.messages else None
    if not req.stream:
        if call is not None:
            choice = ChatChoice(AssistantMessage(None, tool_calls=[call]), finish_reason="tool_calls")
            return encode(ChatCompletion(id=ident, created=created, model=req.model, choices=[choice], usage=usage))
        if altered:
            choice = ChatChoice(AssistantMessage([TextPart(text)]))
            return encode(ChatCompletion(id=ident, created=created, model=req.model, choices=[choice]))
        choice = ChatChoice(AssistantMessage(text))
        return encode(ChatCompletion(id=ident, created=created, model=req.model, choices=[choice], usage=usage))

    with_usage = bool(req.stream_options and req.stream_options.include_usage) and not altered

    def chunk(choices: list[ChunkChoice], final_usage: Usage | None = None) -> bytes:
        usage: Usage | None | UnsetType = final_usage if with_usage else UNSET  # UNSET: no usage field
        return sse_data(ChatCompletionChunk(id=ident, created=created, model=req.model, choices=choices, usage=usage))

    def delta(piece: str, role: str | None = None) -> Delta:
        return Delta(role=role, text=piece) if altered else Delta(role=role, content=piece)

    if call is not None:
        name = ToolCallDelta(0, call.id, "function", FunctionDelta(call.function.name, ""))
        frames = [chunk([ChunkChoice(Delta(role="assistant", tool_calls=[name]))])]
        pieces = split_chunks(call.function.arguments, knobs.chunks)
        frames += [
            chunk([ChunkChoice(Delta(tool_calls=[ToolCallDelta(0, function=FunctionDelta(arguments=p))]))])
            for p in pieces
        ]
        frames.append(chunk([ChunkChoice(Delta(), finish_reason="tool_calls")]))
    else:
        frames = [chunk([ChunkChoice(delta("", "assistant"))])]
        frames += [chunk([ChunkChoice(delta(piece))]) for piece in split_chunks(text, knobs.chunks)]
        frames.append(chunk([ChunkChoice(Delta(), finish_reason="stop")]))
    if with_usage:
        frames.append(chunk([], usage))
    frames.append(SSE_DONE)
    return frames


def completions(body: bytes, knobs: Knobs) -> bytes | list[bytes]:
    """Legacy text completion: "echo: <prompt>" (list prompts are joined by newlines)."""
    req: CompletionRequest = decode(_completion, body)
    check_model(req.model)
    prompt = req.prompt if isinstance(req.prompt, str) else "\n".join(map(str, req.prompt))
    text = ECHO_PREFIX + prompt
    usage = _usage(count_tokens(prompt), count_tokens(text))
    ident, created = new_id("cmpl-"), now()
    if not req.stream:
        return encode(
            Completion(id=ident, created=created, model=req.model, choices=[CompletionChoice(text)], usage=usage)
        )

    with_usage = bool(req.stream_options and req.stream_options.include_usage)

    def chunk(choices: list[CompletionChoice], final_usage: Usage | None = None) -> bytes:
        usage: Usage | None | UnsetType = final_usage if with_usage else UNSET  # UNSET: no usage field
        return sse_data(Completion(id=ident, created=created, model=req.model, choices=choices, usage=usage))

    frames = [chunk([CompletionChoice(piece, None)]) for piece in split_chunks(text, knobs.chunks)]
    frames.append(chunk([CompletionChoice("", "stop")]))
    if with_usage:
        frames.append(chunk([], usage))
    frames.append(SSE_DONE)
    return frames


def _vector(item: str | list, dimensions: int) -> list[float]:
    """Deterministic pseudo-embedding in [-1, 1), derived from a hash of the input."""
    seed = item.encode() if isinstance(item, str) else encode(item)
    raw = hashlib.shake_256(seed).digest(2 * dimensions)
    return [v / 32768.0 - 1.0 for v in struct.unpack(f"<{dimensions}H", raw)]


def _embedding_items(value: str | list) -> list[str | list[int]]:
    """The inputs to embed, in the forms the API accepts: a string, or a non-empty array of
    strings, of token ids, or of token-id arrays. Anything else is a 400, as it is there."""
    if not value:
        raise ProviderError(400, "'input' must not be empty")
    if isinstance(value, str) or all(type(i) is int for i in value):
        return [value]
    if all(isinstance(i, str) and i for i in value):
        return value
    if all(type(i) is list and i and all(type(t) is int for t in i) for i in value):
        return value
    message = "'input' must be a string, or an array of non-empty strings, of token ids or of token-id arrays"
    raise ProviderError(400, message)


def embeddings(body: bytes, knobs: Knobs) -> bytes:
    """One vector per input item; token-array inputs are hashed like strings."""
    req: EmbeddingRequest = decode(_embedding, body)
    check_model(req.model)
    items = _embedding_items(req.input)
    dims = req.dimensions or EMBEDDING_DIMENSIONS
    if not 1 <= dims <= 4096:
        raise ProviderError(400, f"'dimensions' must be in [1, 4096], not {dims}")
    data = []
    for index, item in enumerate(items):
        vector = _vector(item, dims)
        if req.encoding_format == "base64":
            data.append(Embedding(index, base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()))
        else:
            data.append(Embedding(index, vector))
    tokens = sum(count_tokens(i) if isinstance(i, str) else len(i) for i in items)
    return encode(EmbeddingList(data=data, model=req.model, usage=EmbeddingUsage(tokens, tokens)))


def models(body: bytes, knobs: Knobs) -> bytes:
    return _MODELS
