"""The request, answer and error translations of gatewayd.translate on their edge cases;
the end-to-end paths (both SDKs, both mock providers) are in tests/test_translation.py."""

from __future__ import annotations

import json

import pytest

from gatewayd.translate import Translation, Untranslatable

TO_ANTHROPIC = Translation("chat", "messages")
TO_OPENAI = Translation("messages", "chat")


def chat(**fields) -> bytes:
    return json.dumps({"model": "m", **fields}).encode()


def messages(**fields) -> bytes:
    return json.dumps({"model": "m", "max_tokens": 8, **fields}).encode()


def refused(translation: Translation, body: bytes) -> Untranslatable:
    with pytest.raises(Untranslatable) as caught:
        translation.request(body)
    return caught.value


def test_tool_results_and_the_next_user_turn_become_one_anthropic_user_turn():
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    body = chat(
        messages=[
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": None, "tool_calls": [call, {**call, "id": "c2"}]},
            {"role": "tool", "tool_call_id": "c1", "content": "one"},
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "two"}]},
            {"role": "user", "content": "and?"},
        ]
    )
    turns = json.loads(TO_ANTHROPIC.request(body))["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"][1] == {"type": "tool_use", "id": "c2", "name": "f", "input": {"a": 1}}
    assert [b["type"] for b in turns[2]["content"]] == ["tool_result", "tool_result", "text"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (chat(messages=[{"role": "user", "content": "x"}, {"role": "system", "content": "late"}]), "$.messages[1]"),
        (
            chat(
                messages=[
                    {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{"}}]}
                ]
            ),
            "$.messages[0].tool_calls[0].function.arguments",
        ),
        (
            chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y"}}]}]),
            "$.messages[0].content[0].image_url.url",
        ),
        (chat(messages=[{"role": "user", "content": "x", "name": "bob"}]), "$.messages[0]"),
        (chat(messages=[{"role": "user", "content": "x"}], n=2), "$.n"),
        (chat(messages=[{"role": "user", "content": "x"}], logprobs=True), "$"),
    ],
)
def test_what_anthropic_cannot_take_is_refused_naming_the_field(body, field):
    assert refused(TO_ANTHROPIC, body).field == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            messages(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "x"}, {"type": "tool_result", "tool_use_id": "t"}],
                    }
                ]
            ),
            "$.messages[0].content[1]",
        ),
        (
            messages(
                messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": True}]}]
            ),
            "$.messages[0].content[0].is_error",
        ),
        (messages(messages=[{"role": "user", "content": "x"}], stop_sequences=list("abcde")), "stop_sequences"),
        (messages(messages=[{"role": "user", "content": "x"}], tool_choice={"type": "tool"}), "tool_choice.name"),
        (
            messages(messages=[{"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {}}]}]),
            "$.messages[0].content[0]",
        ),
    ],
)
def test_what_openai_cannot_take_is_refused_naming_the_field(body, field):
    assert refused(TO_OPENAI, body).field == field


def test_whole_answers_map_stop_reasons_and_usage_both_ways():
    anthropic = {
        "id": "msg_1",
        "type": "message",
        "model": "c",
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "max_tokens",
        "usage": {"input_tokens": 3, "output_tokens": 2, "cache_read_input_tokens": 5},
    }
    answer = json.loads(TO_ANTHROPIC.response(json.dumps(anthropic).encode()))
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"] == {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10}
    completion = {
        "id": "chatcmpl-1",
        "model": "g",
        "choices": [
            {
                "message": {"content": None, "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": ""}}]},
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 4, "completion_tokens": 1},
    }
    message = json.loads(TO_OPENAI.response(json.dumps(completion).encode()))
    assert message["stop_reason"] == "tool_use"
    assert message["content"] == [{"type": "tool_use", "id": "c", "name": "f", "input": {}}]
    assert message["usage"] == {"input_tokens": 4, "output_tokens": 1}


def test_errors_take_the_callers_shape_and_a_status_its_sdk_knows():
    overloaded = b'{"type":"error","error":{"type":"overloaded_error","message":"busy"}}'
    status, body = TO_ANTHROPIC.error(529, overloaded)
    assert status == 503
    assert json.loads(body)["error"] == {
        "message": "busy",
        "type": "api_error",
        "param": None,
        "code": "overloaded_error",
    }
    bad = b'{"error":{"message":"no","type":"invalid_request_error","code":"bad_field","param":null}}'
    status, body = TO_OPENAI.error(400, bad)
    assert status == 400 and json.loads(body) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "no"},
    }
    assert TO_OPENAI.error(502, b"<html>") is None
