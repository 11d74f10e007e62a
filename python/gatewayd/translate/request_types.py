"""The request bodies translation reads, as Structs that list every field it carries over
(forbid_unknown_fields): any other field is refused by name rather than dropped.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


# -- OpenAI chat completions request --


class OAText(Strict, tag="text", tag_field="type"):
    text: str


class OAImageURL(Strict):
    url: str
    detail: Literal["auto"] | None = None  # low/high have no Anthropic equivalent


class OAImage(Strict, tag="image_url", tag_field="type"):
    image_url: OAImageURL


class OAFunctionCall(Strict):
    name: str
    arguments: str


class OAToolCall(Strict):
    id: str
    function: OAFunctionCall
    type: Literal["function"] = "function"


class OAMessage(Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[OAText | OAImage] | None = None
    tool_calls: list[OAToolCall] | None = None
    tool_call_id: str | None = None


class OAFunction(Strict):
    name: str
    description: str | None = None
    parameters: dict | None = None
    strict: Literal[False] | None = None  # strict schemas have no Anthropic equivalent


class OATool(Strict):
    function: OAFunction
    type: Literal["function"] = "function"


class OANamedFunction(Strict):
    name: str


class OANamedTool(Strict):
    function: OANamedFunction
    type: Literal["function"] = "function"


class OAJsonSchema(Strict):
    name: str
    schema: dict
    description: str | None = None
    strict: bool | None = None


class OATextFormat(Strict, tag="text", tag_field="type"):
    pass


class OAJsonSchemaFormat(Strict, tag="json_schema", tag_field="type"):
    """Structured output; plain JSON mode (json_object) has no Anthropic equivalent."""

    json_schema: OAJsonSchema


class OAStreamOptions(Strict):
    include_usage: bool | None = None


class ChatRequest(Strict):
    model: str
    messages: list[OAMessage]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: OAStreamOptions | None = None
    n: Literal[1] | None = None
    tools: list[OATool] | None = None
    tool_choice: Literal["none", "auto", "required"] | OANamedTool | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None
    response_format: OATextFormat | OAJsonSchemaFormat | None = None


# -- Anthropic messages request --


class ANText(Strict, tag="text", tag_field="type"):
    text: str


class ANBase64(Strict, tag="base64", tag_field="type"):
    media_type: str
    data: str


class ANURL(Strict, tag="url", tag_field="type"):
    url: str


class ANImage(Strict, tag="image", tag_field="type"):
    source: ANBase64 | ANURL


class ANToolUse(Strict, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: msgspec.Raw


class ANToolResult(Strict, tag="tool_result", tag_field="type"):
    tool_use_id: str
    content: str | list[ANText] = ""
    is_error: Literal[False] | None = None  # OpenAI's tool messages cannot say it failed


class ANMessage(Strict):
    role: Literal["user", "assistant"]
    content: str | list[ANText | ANImage | ANToolUse | ANToolResult]


class ANTool(Strict):
    name: str
    input_schema: msgspec.Raw
    description: str | None = None
    type: Literal["custom"] | None = None


class ANToolChoice(Strict):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ANJsonFormat(Strict):
    type: Literal["json_schema"]
    schema: dict


class ANOutputConfig(Strict):
    format: ANJsonFormat | None = None  # `effort` has no OpenAI chat equivalent


class ANMetadata(Strict):
    user_id: str | None = None


class MessagesRequest(Strict):
    model: str
    max_tokens: int
    messages: list[ANMessage]
    system: str | list[ANText] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    stream: bool | None = None
    tools: list[ANTool] | None = None
    tool_choice: ANToolChoice | None = None
    metadata: ANMetadata | None = None
    output_config: ANOutputConfig | None = None
