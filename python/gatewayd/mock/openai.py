"""OpenAI dialect: chat completions, completions, embeddings and models, echoing the input.

Replies carry every field the official SDK reads, so the SDK parses them like real ones.
"""

from __future__ import annotations

import base64
import hashlib
import struct

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


class ContentPart(msgspec.Struct):
    type: str
    text: str | None = None


class ChatMessage(msgspec.Struct):
    role: str
    content: str | list[ContentPart] | None = None


class StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class ChatRequest(msgspec.Struct):
    model: str
    messages: list[ChatMessage]
    stream: bool | None = None
    stream_options: StreamOptions | None = None


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


class AssistantMessage(msgspec.Struct):
    content: str | list[TextPart]  # a list only in the altered shape (x-mock-shape)
    role: str = "assistant"
    refusal: None = None


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


class Delta(msgspec.Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    text: str | None = None  # instead of content, in the altered shape


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
    if isinstance(message.content, str):
        return message.content
    return "\n".join(p.text for p in message.content or () if p.type == "text" and p.text)


def _usage(prompt: int, completion: int) -> Usage:
    return Usage(prompt, completion, prompt + completion)


def chat(body: bytes, knobs: Knobs) -> bytes | list[bytes]:
    """Reply "echo: <last user message>" as a completion or as an SSE chunk stream (in the
    altered shape with x-mock-shape: altered, see config.SHAPES)."""
    req: ChatRequest = decode(_chat, body)
    check_model(req.model)
    last_user = next((m for m in reversed(req.messages) if m.role == "user"), None)
    text = ECHO_PREFIX + (_message_text(last_user) if last_user else "")
    usage = _usage(sum(count_tokens(_message_text(m)) for m in req.messages), count_tokens(text))
    ident, created = new_id("chatcmpl-"), now()
    altered = knobs.shape == "altered"
    if not req.stream:
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
