"""Request bodies: OpenAI chat completions to Anthropic messages and back.

Each side is decoded into the Structs of gatewayd.translate.request_types, which list
every field the translation carries over: any other field is refused by name rather than
dropped.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from gatewayd.translate.errors import Untranslatable, refusal
from gatewayd.translate.request_types import (
    ANURL,
    ANBase64,
    ANImage,
    ANText,
    ANTool,
    ANToolUse,
    ChatRequest,
    MessagesRequest,
    OAImage,
    OAJsonSchemaFormat,
    OANamedTool,
    OAText,
    OATool,
    OAToolCall,
)

# Anthropic requires max_tokens; an OpenAI request without one gets this (README).
DEFAULT_MAX_TOKENS = 4096
ANTHROPIC = "Anthropic Messages API"
OPENAI = "OpenAI Chat Completions API"
_DATA_URL = re.compile(r"data:(image/[\w.+-]+);base64,(.*)", re.S)

_encode = msgspec.json.encode


_chat = msgspec.json.Decoder(ChatRequest)
_messages = msgspec.json.Decoder(MessagesRequest)


def to_anthropic(body: bytes) -> tuple[bytes, bool]:
    """An OpenAI chat completions body as an Anthropic messages body, and whether the
    caller's stream asked for usage (`stream_options.include_usage`)."""
    try:
        req = _chat.decode(body)
    except msgspec.ValidationError as exc:
        raise refusal(exc, ANTHROPIC) from None
    out: dict[str, Any] = {"model": req.model}
    system: list[dict] = []
    messages: list[dict] = []
    for i, m in enumerate(req.messages):
        at = f"$.messages[{i}]"
        if m.role in ("system", "developer"):
            if messages:
                raise Untranslatable(
                    at,
                    f"{at}: a {m.role} message after the first turn cannot be translated to the {ANTHROPIC}"
                    " (its system prompt comes first)",
                )
            system += _anthropic_blocks(m.content, at)
        elif m.role == "tool":
            if m.tool_call_id is None:
                raise Untranslatable(f"{at}.tool_call_id", f"{at}.tool_call_id: a tool message needs it")
            result = {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": _anthropic_blocks(m.content, at)}
            _append(messages, "user", [result])
        else:
            blocks = _anthropic_blocks(m.content, at)
            if m.role == "assistant":
                for j, call in enumerate(m.tool_calls or ()):
                    blocks.append(
                        {
                            "type": "tool_use",
                            "id": call.id,
                            "name": call.function.name,
                            "input": _arguments(call, f"{at}.tool_calls[{j}]"),
                        }
                    )
            elif m.tool_calls:
                raise Untranslatable(f"{at}.tool_calls", f"{at}.tool_calls: only assistant messages carry tool calls")
            _append(messages, m.role, blocks)
    if system:
        out["system"] = system
    out["messages"] = messages
    out["max_tokens"] = req.max_completion_tokens or req.max_tokens or DEFAULT_MAX_TOKENS
    if req.temperature is not None:
        if req.temperature > 1:
            raise Untranslatable(
                "temperature", f"temperature: {req.temperature} is above the {ANTHROPIC}'s maximum of 1"
            )
        out["temperature"] = req.temperature
    if req.top_p is not None:
        out["top_p"] = req.top_p
    if req.stop is not None:
        out["stop_sequences"] = [req.stop] if isinstance(req.stop, str) else req.stop
    if req.stream:
        out["stream"] = True
    if req.tools:
        out["tools"] = [_anthropic_tool(t) for t in req.tools]
    choice = _anthropic_tool_choice(req.tool_choice, req.parallel_tool_calls)
    if choice is not None:
        out["tool_choice"] = choice
    if req.user is not None:
        out["metadata"] = {"user_id": req.user}
    if isinstance(req.response_format, OAJsonSchemaFormat):
        out["output_config"] = {"format": {"type": "json_schema", "schema": req.response_format.json_schema.schema}}
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return _encode(out), include_usage


def _append(messages: list[dict], role: str, blocks: list[dict]) -> None:
    """Consecutive turns of one role (tool results, then the user's text) become one."""
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"] += blocks
    else:
        messages.append({"role": role, "content": blocks})


def _anthropic_blocks(content: str | list[OAText | OAImage] | None, at: str) -> list[dict]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict] = []
    for j, part in enumerate(content):
        if isinstance(part, OAText):
            blocks.append({"type": "text", "text": part.text})
            continue
        url = part.image_url.url
        found = _DATA_URL.fullmatch(url)
        if found:
            blocks.append({"type": "image", "source": {"type": "base64", "media_type": found[1], "data": found[2]}})
        elif url.startswith(("https://", "http://")):
            blocks.append({"type": "image", "source": {"type": "url", "url": url}})
        else:
            where = f"{at}.content[{j}].image_url.url"
            raise Untranslatable(where, f"{where}: only base64 data URLs of images and http(s) URLs translate")
    return blocks


def _arguments(call: OAToolCall, at: str) -> msgspec.Raw:
    """A tool call's arguments (a JSON string in OpenAI's API) as Anthropic's input object."""
    try:
        if not isinstance(msgspec.json.decode(call.function.arguments), dict):
            raise msgspec.DecodeError("not an object")
    except msgspec.DecodeError:
        raise Untranslatable(f"{at}.function.arguments", f"{at}.function.arguments: not a JSON object") from None
    return msgspec.Raw(call.function.arguments.encode())


def _anthropic_tool(tool: OATool) -> dict:
    function = tool.function
    out: dict[str, Any] = {
        "name": function.name,
        "input_schema": function.parameters or {"type": "object", "properties": {}},
    }
    if function.description is not None:
        out["description"] = function.description
    return out


def _anthropic_tool_choice(choice, parallel: bool | None) -> dict | None:
    if choice is None:
        out: dict[str, Any] | None = None if parallel is not False else {"type": "auto"}
    elif isinstance(choice, OANamedTool):
        out = {"type": "tool", "name": choice.function.name}
    else:
        out = {"type": {"none": "none", "auto": "auto", "required": "any"}[choice]}
    if parallel is False and out is not None and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def to_openai(body: bytes) -> bytes:
    """An Anthropic messages body as an OpenAI chat completions body; streams ask for usage
    (Anthropic streams always report it)."""
    try:
        req = _messages.decode(body)
    except msgspec.ValidationError as exc:
        raise refusal(exc, OPENAI) from None
    messages: list[dict] = []
    if req.system:
        system = req.system if isinstance(req.system, str) else "\n\n".join(b.text for b in req.system)
        messages.append({"role": "system", "content": system})
    for i, m in enumerate(req.messages):
        at = f"$.messages[{i}]"
        if isinstance(m.content, str):
            messages.append({"role": m.role, "content": m.content})
            continue
        parts: list[dict] = []
        calls: list[dict] = []
        for j, block in enumerate(m.content):
            where = f"{at}.content[{j}]"
            if isinstance(block, ANText):
                parts.append({"type": "text", "text": block.text})
            elif isinstance(block, ANImage):
                if m.role != "user":
                    raise Untranslatable(where, f"{where}: only user messages carry images in the {OPENAI}")
                source = block.source
                url = source.url if isinstance(source, ANURL) else _data_url(source)
                parts.append({"type": "image_url", "image_url": {"url": url}})
            elif isinstance(block, ANToolUse):
                if m.role != "assistant":
                    raise Untranslatable(where, f"{where}: only assistant messages carry tool_use blocks")
                calls.append(
                    {
                        "id": block.id,
                        "type": "function",
                        "function": {"name": block.name, "arguments": bytes(block.input).decode()},
                    }
                )
            else:
                if m.role != "user":
                    raise Untranslatable(where, f"{where}: only user messages carry tool_result blocks")
                if parts:
                    raise Untranslatable(
                        where, f"{where}: tool results must come before the turn's other content in the {OPENAI}"
                    )
                content = (
                    block.content if isinstance(block.content, str) else "\n\n".join(t.text for t in block.content)
                )
                messages.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": content})
        if m.role == "assistant":
            text = "".join(p["text"] for p in parts)
            turn: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                turn["tool_calls"] = calls
            messages.append(turn)
        elif parts:
            only_text = all(p["type"] == "text" for p in parts)
            messages.append(
                {
                    "role": "user",
                    "content": "".join(p["text"] for p in parts) if only_text and len(parts) == 1 else parts,
                }
            )
    out: dict[str, Any] = {"model": req.model, "messages": messages, "max_completion_tokens": req.max_tokens}
    if req.temperature is not None:
        out["temperature"] = req.temperature
    if req.top_p is not None:
        out["top_p"] = req.top_p
    if req.stop_sequences:
        if len(req.stop_sequences) > 4:
            raise Untranslatable("stop_sequences", f"stop_sequences: the {OPENAI} takes at most 4")
        out["stop"] = req.stop_sequences
    if req.stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    if req.tools:
        out["tools"] = [_openai_tool(t) for t in req.tools]
    if req.tool_choice is not None:
        choice = req.tool_choice
        if choice.type == "tool":
            if choice.name is None:
                raise Untranslatable("tool_choice.name", "tool_choice.name: a tool choice of type tool names it")
            out["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        else:
            out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
        if choice.disable_parallel_tool_use and req.tools:
            out["parallel_tool_calls"] = False
    if req.metadata is not None and req.metadata.user_id is not None:
        out["user"] = req.metadata.user_id
    if req.output_config is not None and req.output_config.format is not None:
        schema = {"name": "output", "schema": req.output_config.format.schema, "strict": True}
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    return _encode(out)


def _data_url(source: ANBase64) -> str:
    return f"data:{source.media_type};base64,{source.data}"


def _openai_tool(tool: ANTool) -> dict:
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
    if tool.description is not None:
        function["description"] = tool.description
    return {"type": "function", "function": function}
