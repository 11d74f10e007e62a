"""One API for every provider (issue 14): the official openai and anthropic SDKs against a
real gateway whose routes send their models to a mock provider of the other protocol. The
mock validates each request against its own API's shape (unknown fields refused), so a
bad translation fails at the provider, not only at the client."""

from __future__ import annotations

import base64
import json
import signal
import threading
import time
import urllib.request

import anthropic
import openai
import pytest
from conftest import start_provider_mock

from support.gateway import KEYS
from support.procs import stop_process
from support.views import clear_journal, journal

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
WEATHER = {
    "name": "weather",
    "description": "the weather in a city",
    "schema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
}
OPENAI_TOOL = {
    "type": "function",
    "function": {"name": WEATHER["name"], "description": WEATHER["description"], "parameters": WEATHER["schema"]},
}
ANTHROPIC_TOOL = {"name": WEATHER["name"], "description": WEATHER["description"], "input_schema": WEATHER["schema"]}


def oa(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEYS["acme"], max_retries=0)


def an(gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=KEYS["acme"], max_retries=0)


def received(mock_port) -> dict:
    """What the mock provider was sent last: its path and body."""
    with urllib.request.urlopen(f"http://127.0.0.1:{mock_port}/_mock/requests", timeout=10) as r:
        return json.load(r)[-1]


def records(gateway, request_id: str) -> list[dict]:
    return [r for r in gateway.audit_records() if r.get("request_id") == request_id]


# -- plain requests both ways --


def test_openai_sdk_reaches_an_anthropic_provider(gateway, mock_port):
    clear_journal(mock_port)
    raw = oa(gateway).chat.completions.with_raw_response.create(
        model="only-claude-1",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "hello claude"},
        ],
        temperature=0.5,
        top_p=0.9,
        stop=["END"],
        max_tokens=50,
        user="end-user-7",
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == "echo: hello claude"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == 3 and reply.usage.prompt_tokens == 6
    sent = received(mock_port)
    assert sent["path"] == "/v1/messages"
    assert sent["body"] == {
        "model": "only-claude-1",
        "system": [{"type": "text", "text": "be brief"}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "first"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
            {"role": "user", "content": [{"type": "text", "text": "hello claude"}]},
        ],
        "max_tokens": 50,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "end-user-7"},
    }
    [record] = records(gateway, raw.headers["x-request-id"])
    assert (record["api"], record["upstream_api"], record["upstream"]) == ("chat", "messages", "mock-anthropic")


def test_openai_request_without_max_tokens_gets_the_documented_default(gateway, mock_port):
    oa(gateway).chat.completions.create(
        model="only-claude-1", messages=[{"role": "developer", "content": "hi"}, {"role": "user", "content": "x"}]
    )
    body = received(mock_port)["body"]
    assert body["max_tokens"] == 4096 and body["system"] == [{"type": "text", "text": "hi"}]


def test_anthropic_sdk_reaches_an_openai_provider(gateway, mock_port):
    raw = an(gateway).messages.with_raw_response.create(
        model="only-gpt-1",
        max_tokens=40,
        system="be brief",
        messages=[{"role": "user", "content": "hello gpt"}],
        stop_sequences=["STOP"],
        metadata={"user_id": "end-user-8"},
        extra_body={"temperature": 0.3, "top_p": 0.8},  # this SDK version has no arguments for them
    )
    reply = raw.parse()
    assert reply.content[0].text == "echo: hello gpt"
    assert reply.stop_reason == "end_turn"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (4, 3)
    sent = received(mock_port)
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"] == {
        "model": "only-gpt-1",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello gpt"}],
        "max_completion_tokens": 40,
        "temperature": 0.3,
        "top_p": 0.8,
        "stop": ["STOP"],
        "user": "end-user-8",
    }
    [record] = records(gateway, raw.headers["x-request-id"])
    assert (record["api"], record["upstream_api"]) == ("messages", "chat")


def test_a_native_route_is_not_translated_and_a_pinned_one_never_is(gateway, mock_port):
    raw = oa(gateway).chat.completions.with_raw_response.create(
        model="mock-gpt", messages=[{"role": "user", "content": "x"}]
    )
    assert received(mock_port)["path"] == "/v1/chat/completions"
    assert "upstream_api" not in records(gateway, raw.headers["x-request-id"])[0]
    with pytest.raises(openai.NotFoundError):
        oa(gateway).chat.completions.create(model="pinned-claude-1", messages=[{"role": "user", "content": "x"}])
    assert (
        an(gateway)
        .messages.create(model="pinned-claude-1", max_tokens=5, messages=[{"role": "user", "content": "y"}])
        .content[0]
        .text
        == "echo: y"
    )


# -- streams both ways --


def test_openai_sdk_streams_from_an_anthropic_provider(gateway):
    stream = oa(gateway).chat.completions.create(
        model="only-claude-1",
        messages=[{"role": "user", "content": "stream me please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream me please"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4


def test_anthropic_sdk_streams_from_an_openai_provider(gateway, mock_port):
    with an(gateway).messages.stream(
        model="only-gpt-1", max_tokens=64, messages=[{"role": "user", "content": "stream me please"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: stream me please"
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (3, 4)
    assert received(mock_port)["body"]["stream_options"] == {"include_usage": True}


# -- tools and tool results --


def test_openai_sdk_tool_call_and_result_round_trip_through_anthropic(gateway, mock_port):
    client = oa(gateway)
    messages: list = [{"role": "user", "content": "weather in Oslo"}]
    reply = client.chat.completions.create(
        model="only-claude-1", messages=messages, tools=[OPENAI_TOOL], tool_choice="required", parallel_tool_calls=False
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "weather" and json.loads(call.function.arguments) == {"text": "weather in Oslo"}
    sent = received(mock_port)["body"]
    assert sent["tools"] == [ANTHROPIC_TOOL]
    assert sent["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    answer = client.chat.completions.create(model="only-claude-1", messages=messages, tools=[OPENAI_TOOL])
    assert answer.choices[0].message.content == f"echo: [tool {call.id} said: sunny]"
    turns = received(mock_port)["body"]["messages"]
    assert turns[1]["content"] == [
        {"type": "tool_use", "id": call.id, "name": "weather", "input": {"text": "weather in Oslo"}}
    ]
    assert turns[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": [{"type": "text", "text": "sunny"}]}],
    }


def test_openai_sdk_streams_a_tool_call_from_anthropic(gateway):
    stream = oa(gateway).chat.completions.create(
        model="only-claude-1",
        messages=[{"role": "user", "content": "weather in Rome"}],
        tools=[OPENAI_TOOL],
        stream=True,
    )
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or ():
                call = calls.setdefault(delta.index, {"id": delta.id, "name": delta.function.name, "arguments": ""})
                call["arguments"] += delta.function.arguments or ""
    assert finish == "tool_calls"
    [call] = calls.values()
    assert call["name"] == "weather" and call["id"].startswith("toolu_")
    assert json.loads(call["arguments"]) == {"text": "weather in Rome"}


def test_anthropic_sdk_tool_use_and_result_round_trip_through_openai(gateway, mock_port):
    client = an(gateway)
    messages: list = [{"role": "user", "content": "weather in Oslo"}]
    reply = client.messages.create(
        model="only-gpt-1",
        max_tokens=64,
        messages=messages,
        tools=[ANTHROPIC_TOOL],
        tool_choice={"type": "tool", "name": "weather"},
    )
    assert reply.stop_reason == "tool_use"
    [use] = reply.content
    assert use.type == "tool_use" and use.name == "weather" and use.input == {"text": "weather in Oslo"}
    sent = received(mock_port)["body"]
    assert sent["tools"] == [OPENAI_TOOL] and sent["tool_choice"] == {
        "type": "function",
        "function": {"name": "weather"},
    }
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in reply.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": use.id, "content": "sunny"},
                {"type": "text", "text": "and?"},
            ],
        },
    ]
    answer = client.messages.create(
        model="only-gpt-1", max_tokens=64, messages=messages, tools=[ANTHROPIC_TOOL], tool_choice={"type": "none"}
    )
    assert answer.content[0].text == "echo: and?"
    assert received(mock_port)["body"]["tool_choice"] == "none"
    turns = received(mock_port)["body"]["messages"]
    assert turns[1]["tool_calls"] == [
        {"id": use.id, "type": "function", "function": {"name": "weather", "arguments": '{"text":"weather in Oslo"}'}}
    ]
    assert turns[2] == {"role": "tool", "tool_call_id": use.id, "content": "sunny"}
    assert turns[3] == {"role": "user", "content": "and?"}


def test_anthropic_sdk_streams_a_tool_use_from_openai(gateway):
    with an(gateway).messages.stream(
        model="only-gpt-1",
        max_tokens=64,
        messages=[{"role": "user", "content": "weather in Rome"}],
        tools=[ANTHROPIC_TOOL],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    [use] = final.content
    assert use.type == "tool_use" and use.name == "weather" and use.input == {"text": "weather in Rome"}


# -- images --


def test_openai_sdk_images_reach_anthropic_as_base64_and_url(gateway, mock_port):
    content = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    reply = oa(gateway).chat.completions.create(model="only-claude-1", messages=[{"role": "user", "content": content}])
    assert (
        reply.choices[0].message.content == "echo: what is this\n[image image/png]\n[image https://example.com/cat.jpg]"
    )
    blocks = received(mock_port)["body"]["messages"][0]["content"]
    assert blocks[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    assert blocks[2] == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}


def test_anthropic_sdk_image_reaches_openai_as_a_data_url(gateway, mock_port):
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "text", "text": "what is this"},
    ]
    reply = an(gateway).messages.create(
        model="only-gpt-1", max_tokens=64, messages=[{"role": "user", "content": content}]
    )
    assert reply.content[0].text == "echo: [image image/png]\nwhat is this"
    parts = received(mock_port)["body"]["messages"][0]["content"]
    assert parts[0] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}


# -- upstream errors --


def test_an_anthropic_providers_error_reaches_the_openai_sdk_in_its_shape(gateway):
    with pytest.raises(openai.NotFoundError) as caught:
        oa(gateway).chat.completions.create(model="unknown-claude-1", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 404
    assert caught.value.body["message"] == "The model `unknown-claude-1` does not exist"
    assert caught.value.body["type"] == "invalid_request_error"


def test_an_openai_providers_error_reaches_the_anthropic_sdk_in_its_shape(gateway):
    with pytest.raises(anthropic.RateLimitError) as caught:
        an(gateway).messages.create(model="limited-gpt-1", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 429
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "injected by x-mock-status: 429"},
    }


@pytest.mark.parametrize("flavour", ["openai", "anthropic"])
def test_a_translated_stream_that_breaks_off_ends_with_an_error_event(gateway, fragile_port, flavour):
    _, fragile = start_provider_mock(fragile_port)
    got: list[str] = []
    failure: list[BaseException] = []

    def consume() -> None:
        try:
            if flavour == "openai":
                stream = oa(gateway).chat.completions.create(
                    model="fragileclaude-1", messages=[{"role": "user", "content": "long story"}], stream=True
                )
                got.extend(c.choices[0].delta.content or "" for c in stream if c.choices)
            else:
                with an(gateway).messages.stream(
                    model="fragilegpt-1", max_tokens=64, messages=[{"role": "user", "content": "long story"}]
                ) as stream:
                    for text in stream.text_stream:
                        got.append(text)
        except BaseException as exc:  # noqa: BLE001 - the failure is what we assert on
            failure.append(exc)

    reader = threading.Thread(target=consume)
    reader.start()
    deadline = time.monotonic() + 10
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    stop_process(fragile, sig=signal.SIGKILL)
    reader.join(timeout=15)
    assert not reader.is_alive()
    assert isinstance(failure[0], (openai.APIError, anthropic.APIError)), repr(failure)
    model = "fragileclaude-1" if flavour == "openai" else "fragilegpt-1"
    record = [r for r in gateway.audit_records() if r.get("model") == model][-1]
    assert record["status"] == 502 and record["error"].startswith("protocol")


# -- untranslatable fields --


def test_a_field_anthropic_cannot_take_is_a_400_naming_it(gateway, mock_port):
    clear_journal(mock_port)
    with pytest.raises(openai.BadRequestError) as caught:
        oa(gateway).chat.completions.create(model="only-claude-1", messages=[{"role": "user", "content": "x"}], seed=7)
    assert "`seed`" in caught.value.body["message"] and caught.value.body["code"] == "untranslatable_field"
    with pytest.raises(openai.BadRequestError) as caught:
        oa(gateway).chat.completions.create(
            model="only-claude-1", messages=[{"role": "user", "content": "x"}], response_format={"type": "json_object"}
        )
    assert caught.value.body["param"] == "$.response_format.type"
    with pytest.raises(openai.BadRequestError) as caught:
        oa(gateway).chat.completions.create(
            model="only-claude-1", messages=[{"role": "user", "content": "x"}], temperature=1.5
        )
    assert caught.value.body["param"] == "temperature"
    assert journal(mock_port) == []  # nothing reached the provider


def test_a_field_openai_cannot_take_is_a_400_naming_it(gateway, mock_port):
    clear_journal(mock_port)
    with pytest.raises(anthropic.BadRequestError) as caught:
        an(gateway).messages.create(
            model="only-gpt-1", max_tokens=5, messages=[{"role": "user", "content": "x"}], extra_body={"top_k": 5}
        )
    assert "`top_k`" in caught.value.body["error"]["message"]
    assert journal(mock_port) == []


# -- fallbacks, cache, policy --


@pytest.mark.parametrize("flavour", ["openai", "anthropic"])
def test_a_fallback_may_speak_the_other_protocol(gateway, flavour):
    if flavour == "openai":
        raw = oa(gateway).chat.completions.with_raw_response.create(
            model="crossover-1", messages=[{"role": "user", "content": "fall over"}]
        )
        assert raw.parse().choices[0].message.content == "echo: fall over"
    else:
        raw = an(gateway).messages.with_raw_response.create(
            model="crossover-1", max_tokens=9, messages=[{"role": "user", "content": "fall over"}]
        )
        assert raw.parse().content[0].text == "echo: fall over"
    [record] = records(gateway, raw.headers["x-request-id"])
    assert record["upstream"] == "mock-anthropic" and record["upstream_model"] == "only-claude-fallback"
    assert record["failovers"][0].startswith("dead: ")
    assert record.get("upstream_api") == ("messages" if flavour == "openai" else None)


def test_a_translated_answer_is_cached_under_the_callers_request(gateway, mock_port):
    ask = {"model": "only-claude-1", "messages": [{"role": "user", "content": "cache me"}], "temperature": 0}
    first = oa(gateway).chat.completions.with_raw_response.create(**ask)
    clear_journal(mock_port)
    second = oa(gateway).chat.completions.with_raw_response.create(**ask)
    assert (first.headers["x-gatewayd-cache"], second.headers["x-gatewayd-cache"]) == ("miss", "hit")
    assert second.parse().choices[0].message.content == "echo: cache me"
    assert journal(mock_port) == []


def test_what_goes_upstream_is_the_translation_of_what_policy_judged(gateway, mock_port):
    reply = oa(gateway).chat.completions.create(
        model="only-claude-1", messages=[{"role": "user", "content": "mail a.b@example.com now"}]
    )
    assert reply.choices[0].message.content == "echo: mail [EMAIL] now"
    assert received(mock_port)["body"]["messages"][0]["content"] == [{"type": "text", "text": "mail [EMAIL] now"}]
    with pytest.raises(anthropic.PermissionDeniedError):
        an(gateway).messages.create(
            model="only-gpt-1", max_tokens=5, messages=[{"role": "user", "content": "card 4111 1111 1111 1111"}]
        )


# -- JSON mode --


def test_structured_output_translates_both_ways(gateway, mock_port):
    schema = {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
        "additionalProperties": False,
    }
    reply = oa(gateway).chat.completions.create(
        model="only-claude-1",
        messages=[{"role": "user", "content": "as json"}],
        response_format={"type": "json_schema", "json_schema": {"name": "echo", "schema": schema}},
    )
    assert json.loads(reply.choices[0].message.content) == {"text": "echo: as json"}
    assert received(mock_port)["body"]["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    answer = an(gateway).messages.create(
        model="only-gpt-1",
        max_tokens=64,
        messages=[{"role": "user", "content": "as json"}],
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    assert json.loads(answer.content[0].text) == {"text": "echo: as json"}
    sent = received(mock_port)["body"]["response_format"]
    assert sent == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}}
