"""Whole (not streamed) answers: an Anthropic message as an OpenAI chat completion and
back, with content, tool calls, the stop reason and usage."""

from __future__ import annotations

import time
from typing import Any

import msgspec

# Anthropic stop_reason -> OpenAI finish_reason, and back.
FINISH_REASON = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}
STOP_REASON = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

_encode = msgspec.json.encode


class ANTextBlock(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class ANToolUseBlock(msgspec.Struct, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: msgspec.Raw


class ANUsage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None

    def prompt_tokens(self) -> int:
        """OpenAI counts cached prompt tokens in prompt_tokens; Anthropic apart."""
        return self.input_tokens + (self.cache_creation_input_tokens or 0) + (self.cache_read_input_tokens or 0)


class ANMessage(msgspec.Struct):
    id: str
    model: str
    content: list[ANTextBlock | ANToolUseBlock]
    stop_reason: str | None = None
    usage: ANUsage | None = None


class OAFunction(msgspec.Struct):
    name: str
    arguments: str


class OAToolCall(msgspec.Struct):
    id: str
    function: OAFunction


class OAMessage(msgspec.Struct):
    content: str | None = None
    tool_calls: list[OAToolCall] | None = None


class OAChoice(msgspec.Struct):
    message: OAMessage
    finish_reason: str | None = None


class OAUsage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class OACompletion(msgspec.Struct):
    id: str
    model: str
    choices: list[OAChoice]
    usage: OAUsage | None = None
    created: int | None = None


_anthropic = msgspec.json.Decoder(ANMessage)
_openai = msgspec.json.Decoder(OACompletion)


def anthropic_to_openai(payload: bytes) -> bytes:
    """Raises msgspec.DecodeError when the answer is not an Anthropic message we can read."""
    msg = _anthropic.decode(payload)
    text = "".join(b.text for b in msg.content if isinstance(b, ANTextBlock))
    calls = [
        {"id": b.id, "type": "function", "function": {"name": b.name, "arguments": bytes(b.input).decode()}}
        for b in msg.content
        if isinstance(b, ANToolUseBlock)
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    usage = msg.usage or ANUsage()
    prompt = usage.prompt_tokens()
    return _encode(
        {
            "id": msg.id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": msg.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": FINISH_REASON.get(msg.stop_reason or "end_turn", "stop"),
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": usage.output_tokens,
                "total_tokens": prompt + usage.output_tokens,
            },
        }
    )


def openai_to_anthropic(payload: bytes) -> bytes:
    """Raises msgspec.DecodeError when the answer is not a chat completion we can read."""
    completion = _openai.decode(payload)
    if len(completion.choices) != 1:
        raise msgspec.DecodeError(f"{len(completion.choices)} choices, not one")
    choice = completion.choices[0]
    content: list[dict[str, Any]] = []
    if choice.message.content:
        content.append({"type": "text", "text": choice.message.content})
    for call in choice.message.tool_calls or ():
        try:
            arguments = msgspec.Raw(call.function.arguments.encode()) if call.function.arguments else msgspec.Raw(b"{}")
            msgspec.json.decode(arguments)
        except msgspec.DecodeError:
            raise msgspec.DecodeError(f"tool call {call.id}: its arguments are not JSON") from None
        content.append({"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments})
    usage = completion.usage or OAUsage()
    return _encode(
        {
            "id": completion.id,
            "type": "message",
            "role": "assistant",
            "model": completion.model,
            "content": content,
            "stop_reason": STOP_REASON.get(choice.finish_reason or "stop", "end_turn"),
            "stop_sequence": None,
            "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens},
        }
    )
