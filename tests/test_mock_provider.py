"""The mock provider, driven by the official SDKs exactly as an app would drive a real one."""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest

from support.mock import start_mock
from support.procs import stop_process

USER_TEXT = "hello mock provider"
ECHO = "echo: " + USER_TEXT


@pytest.fixture(scope="module")
def oai(mock_url):
    with openai.OpenAI(base_url=f"{mock_url}/v1", api_key="sk-test", max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def claude(mock_url):
    with anthropic.Anthropic(base_url=mock_url, api_key="sk-ant-test", max_retries=0) as client:
        yield client


def chat(oai, **kwargs):
    return oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": USER_TEXT}], **kwargs)


def message(claude, **kwargs):
    return claude.messages.create(
        model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": USER_TEXT}], **kwargs
    )


def test_chat_completion_echoes_last_user_message(oai):
    reply = oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": USER_TEXT}]},
        ],
    )
    assert reply.id.startswith("chatcmpl-")
    assert reply.model == "gpt-4o-mini"
    assert reply.choices[0].message.content == ECHO
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens == 2 + 1 + 1 + 3
    assert reply.usage.completion_tokens == 4
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_chat_stream_has_requested_chunks_and_usage(oai):
    chunks = list(chat(oai, stream=True, stream_options={"include_usage": True}, extra_headers={"x-mock-chunks": "5"}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len(pieces) == 5
    assert "".join(pieces) == ECHO
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_stream_without_usage_option_has_no_usage_chunk(oai):
    chunks = list(chat(oai, stream=True))
    assert all(c.choices and c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ECHO


def test_text_completion_plain_and_streamed(oai):
    reply = oai.completions.create(model="gpt-3.5-turbo-instruct", prompt=USER_TEXT)
    assert reply.object == "text_completion"
    assert reply.choices[0].text == ECHO
    assert reply.usage.total_tokens == 3 + 4

    stream = oai.completions.create(
        model="gpt-3.5-turbo-instruct", prompt=USER_TEXT, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == ECHO
    assert chunks[-1].usage.prompt_tokens == 3


# The SDK asks for base64 unless told otherwise, and decodes it itself.
@pytest.mark.parametrize("kwargs", [{}, {"encoding_format": "float"}], ids=["base64", "float"])
def test_embeddings_are_deterministic_per_input(oai, kwargs):
    single = oai.embeddings.create(model="text-embedding-3-small", input="alpha", **kwargs)
    batch = oai.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"], **kwargs)
    assert len(single.data) == 1 and len(single.data[0].embedding) == 8
    assert [d.index for d in batch.data] == [0, 1]
    assert batch.data[0].embedding == pytest.approx(single.data[0].embedding)
    assert batch.data[0].embedding != batch.data[1].embedding
    assert all(-1.0 <= v < 1.0 for v in batch.data[1].embedding)
    assert batch.usage.prompt_tokens == 2


def test_embeddings_honour_dimensions(oai):
    reply = oai.embeddings.create(model="text-embedding-3-small", input="alpha", dimensions=32)
    assert len(reply.data[0].embedding) == 32


def test_models_lists_known_models(oai):
    ids = {m.id for m in oai.models.list()}
    assert {"gpt-4o-mini", "claude-haiku-4-5"} <= ids


def test_anthropic_message(claude):
    reply = claude.messages.create(
        model="claude-haiku-4-5",
        max_tokens=64,
        system="be brief",
        messages=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": USER_TEXT}]},
        ],
    )
    assert reply.id.startswith("msg_")
    assert reply.role == "assistant"
    assert [b.type for b in reply.content] == ["text"]
    assert reply.content[0].text == ECHO
    assert reply.stop_reason == "end_turn"
    assert reply.usage.input_tokens == 2 + 1 + 1 + 3
    assert reply.usage.output_tokens == 4


def test_anthropic_stream_event_lines_match_payload_types(mock_url):
    # Raw, because the SDK swallows pings; gateways see every event line.
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": USER_TEXT}],
    }
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01", "x-mock-chunks": "3"}
    reply = httpx.post(f"{mock_url}/v1/messages", json=body, headers=headers)
    assert reply.headers["content-type"] == "text/event-stream"
    events = [block.split("\n") for block in reply.text.split("\n\n") if block]
    names = [lines[0].removeprefix("event: ") for lines in events]
    payloads = [json.loads(lines[1].removeprefix("data: ")) for lines in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert [p["type"] for p in payloads] == names
    assert "".join(p["delta"]["text"] for p in payloads if p["type"] == "content_block_delta") == ECHO
    assert payloads[-2]["delta"]["stop_reason"] == "end_turn" and payloads[-2]["usage"]["output_tokens"] == 4


def test_altered_shape_answers_chat_and_messages_in_another_contract(mock_url):
    """x-mock-shape: altered (docs/ROLLBACK.md R11's refusal is tested with it): the same
    echo, in other shapes."""
    auth = {"authorization": "Bearer sk-test", "x-mock-shape": "altered", "x-mock-chunks": "2"}
    chat_body = {"model": "gpt-4o", "messages": [{"role": "user", "content": USER_TEXT}]}
    plain = httpx.post(f"{mock_url}/v1/chat/completions", json=chat_body, headers=auth).json()
    assert "usage" not in plain
    assert plain["choices"][0]["message"]["content"] == [{"type": "text", "text": ECHO}]
    streamed = httpx.post(
        f"{mock_url}/v1/chat/completions",
        json={**chat_body, "stream": True, "stream_options": {"include_usage": True}},
        headers=auth,
    ).text
    chunks = [json.loads(e.removeprefix("data: ")) for e in streamed.split("\n\n") if e and "[DONE]" not in e]
    assert all("content" not in c["choices"][0]["delta"] and "usage" not in c for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("text", "") for c in chunks) == ECHO
    assert streamed.endswith("data: [DONE]\n\n")

    claude = {"x-api-key": "k", "anthropic-version": "2023-06-01", "x-mock-shape": "altered", "x-mock-chunks": "2"}
    msg = {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": USER_TEXT}]}
    plain = httpx.post(f"{mock_url}/v1/messages", json=msg, headers=claude).json()
    assert "usage" not in plain and plain["content"] == [{"type": "text", "text": ECHO}]
    streamed = httpx.post(f"{mock_url}/v1/messages", json={**msg, "stream": True}, headers=claude).text
    names = [block.split("\n")[0].removeprefix("event: ") for block in streamed.split("\n\n") if block]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "message_delta",
        "content_block_stop",
        "message_stop",
    ]

    standard = httpx.post(
        f"{mock_url}/v1/chat/completions", json=chat_body, headers={**auth, "x-mock-shape": "standard"}
    ).json()
    assert standard["choices"][0]["message"]["content"] == ECHO and "usage" in standard
    bad = httpx.post(f"{mock_url}/v1/chat/completions", json=chat_body, headers={**auth, "x-mock-shape": "weird"})
    assert bad.status_code == 400 and "x-mock-shape: 'weird' is not one of altered, standard" in bad.text


def test_anthropic_stream_helper_assembles_final_message(claude):
    with claude.messages.stream(
        model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": USER_TEXT}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == ECHO
    assert final.content[0].text == ECHO and final.usage.output_tokens == 4


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, openai.BadRequestError), (429, openai.RateLimitError), (503, openai.InternalServerError)],
)
def test_injected_status_raises_openai_error(oai, status, error):
    with pytest.raises(error) as info:
        chat(oai, extra_headers={"x-mock-status": str(status)})
    assert info.value.status_code == status
    assert "x-mock-status" in info.value.body["message"]


@pytest.mark.parametrize(
    ("status", "error", "kind"),
    [(429, anthropic.RateLimitError, "rate_limit_error"), (529, anthropic.APIStatusError, "overloaded_error")],
)
def test_injected_status_raises_anthropic_error(claude, status, error, kind):
    with pytest.raises(error) as info:
        message(claude, extra_headers={"x-mock-status": str(status)})
    assert info.value.status_code == status
    assert info.value.body["error"]["type"] == kind


def test_error_rate_header_one_always_fails(oai):
    with pytest.raises(openai.InternalServerError):
        chat(oai, extra_headers={"x-mock-error-rate": "1"})


def test_unknown_model_is_not_found_in_both_dialects(oai, claude):
    with pytest.raises(openai.NotFoundError) as info:
        oai.chat.completions.create(model="unknown-model", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found"
    with pytest.raises(anthropic.NotFoundError) as info:
        claude.messages.create(model="unknown-model", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert info.value.body["error"]["type"] == "not_found_error"


def test_latency_header_delays_response_past_client_timeout(oai):
    with pytest.raises(openai.APITimeoutError):
        chat(oai, extra_headers={"x-mock-latency-ms": "2000"}, timeout=0.2)


def test_auth_is_checked_like_the_real_apis(mock_url):
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}
    missing = httpx.post(f"{mock_url}/v1/chat/completions", json=body)
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "invalid_request_error"

    msg = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}
    no_key = httpx.post(f"{mock_url}/v1/messages", json=msg, headers={"anthropic-version": "2023-06-01"})
    assert no_key.status_code == 401 and no_key.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "x-api-key header is required"},
    }
    no_version = httpx.post(f"{mock_url}/v1/messages", json=msg, headers={"x-api-key": "k"})
    assert no_version.status_code == 400


def test_malformed_knob_and_body_are_client_errors(mock_url):
    auth = {"authorization": "Bearer sk-test"}
    bad_knob = httpx.post(f"{mock_url}/v1/chat/completions", headers={**auth, "x-mock-chunks": "lots"}, json={})
    assert bad_knob.status_code == 400 and "x-mock-chunks" in bad_knob.json()["error"]["message"]
    bad_body = httpx.post(f"{mock_url}/v1/chat/completions", headers=auth, json={"model": "gpt-4o"})
    assert bad_body.status_code == 400 and "messages" in bad_body.json()["error"]["message"]
    assert httpx.get(f"{mock_url}/v1/chat/completions", headers=auth).status_code == 405
    assert httpx.post(f"{mock_url}/v1/nothing", headers=auth).status_code == 404


@pytest.mark.parametrize("value", [[None], [1.5], ["a", 1], [[1, None]], [{}], [[]], [""]], ids=repr)
def test_malformed_embedding_input_is_a_400_not_a_crash(mock_url, value):
    body = {"model": "text-embedding-3-small", "input": value}
    reply = httpx.post(f"{mock_url}/v1/embeddings", headers={"authorization": "Bearer sk-test"}, json=body)
    assert reply.status_code == 400 and "'input'" in reply.json()["error"]["message"]


def test_journal_records_requests_without_secrets(oai, claude, mock_url):
    assert httpx.delete(f"{mock_url}/_mock/requests").status_code == 204
    chat(oai, extra_headers={"x-trace": "t-1"})
    message(claude)
    journal = httpx.get(f"{mock_url}/_mock/requests").json()
    assert [(r["method"], r["path"]) for r in journal] == [("POST", "/v1/chat/completions"), ("POST", "/v1/messages")]
    first, second = journal
    assert first["headers"]["authorization"] is True and first["headers"]["x-trace"] == "t-1"
    assert first["body"]["messages"] == [{"role": "user", "content": USER_TEXT}]
    assert second["headers"]["authorization"] is True and second["body"]["max_tokens"] == 64
    assert "sk-test" not in str(journal) and "sk-ant-test" not in str(journal)
    httpx.delete(f"{mock_url}/_mock/requests")
    assert httpx.get(f"{mock_url}/_mock/requests").json() == []


def test_require_key_accepts_only_that_key():
    url, proc = start_mock("--require-key", "sk-right")
    try:
        with openai.OpenAI(base_url=f"{url}/v1", api_key="sk-wrong", max_retries=0) as wrong:
            with pytest.raises(openai.AuthenticationError) as info:
                chat(wrong)
            assert info.value.code == "invalid_api_key"
        with openai.OpenAI(base_url=f"{url}/v1", api_key="sk-right", max_retries=0) as right:
            assert chat(right).choices[0].message.content == ECHO
        with anthropic.Anthropic(base_url=url, api_key="sk-right", max_retries=0) as claude:
            assert message(claude).content[0].text == ECHO
    finally:
        stop_process(proc)
