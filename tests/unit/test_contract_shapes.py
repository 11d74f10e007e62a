"""Response shapes (gatewayd.control.contract, docs/ROLLBACK.md R11): what two answers must
share to be the same contract. Values (ids, texts, counts) never count; keys, types and
the order of stream events do."""

from __future__ import annotations

import json

import pytest

from gatewayd import config
from gatewayd.control.shapes import ShapeError, differences, shape, stream_shape


def body(value: object) -> bytes:
    return json.dumps(value).encode()


def completion(ident: str = "chatcmpl-1", text: str = "echo: hi", **overrides: object) -> bytes:
    value: dict = {
        "id": ident,
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }
    value.update(overrides)
    return body({k: v for k, v in value.items() if v is not None})


def said(before: bytes, after: bytes) -> list[str]:
    return [f"{d.after} {d.joiner} {d.before}" for d in differences(shape(before), shape(after))]


def openai_stream(pieces: list[str], ident: str = "c1", *, key: str = "content", usage: bool = True) -> bytes:
    def chunk(delta: dict, finish: str | None = None, **extra: object) -> str:
        value = {"id": ident, "object": "chat.completion.chunk", "created": 1, "model": "m", **extra}
        value["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}] if delta is not None else []
        return "data: " + json.dumps(value) + "\n\n"

    extra = {"usage": None} if usage else {}
    out = chunk({"role": "assistant", key: ""}, **extra)
    out += "".join(chunk({key: p}, **extra) for p in pieces)
    out += chunk({}, "stop", **extra)
    if usage:
        out += "data: " + json.dumps({"id": ident, "choices": [], "usage": {"total_tokens": 9}}) + "\n\n"
    return (out + "data: [DONE]\n\n").encode()


def anthropic_stream(names: list[str], text: str = "hi") -> bytes:
    data = {
        "message_start": {"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 1}}},
        "content_block_start": {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
        "ping": {"type": "ping"},
        "content_block_delta": {"type": "content_block_delta", "index": 0, "delta": {"text": text}},
        "content_block_stop": {"type": "content_block_stop", "index": 0},
        "message_delta": {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
        "message_stop": {"type": "message_stop"},
    }
    return "".join(f"event: {n}\ndata: {json.dumps(data[n])}\n\n" for n in names).encode()


ANTHROPIC = [
    "message_start",
    "content_block_start",
    "ping",
    "content_block_delta",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
]


def test_shape_is_key_paths_with_types_arrays_collapsed():
    assert shape(completion()) == {
        "id: string",
        "object: string",
        "created: number",
        "model: string",
        "choices: array",
        "choices[]: object",
        "choices[].index: number",
        "choices[].message: object",
        "choices[].message.role: string",
        "choices[].message.content: string",
        "choices[].finish_reason: string",
        "usage: object",
        "usage.prompt_tokens: number",
        "usage.completion_tokens: number",
        "usage.total_tokens: number",
    }
    assert shape(body({"a": [1, 2.5, True, None, {"b": []}]})) == {
        "a: array",
        "a[]: number",
        "a[]: boolean",
        "a[]: null",
        "a[]: object",
        "a[].b: array",
    }


def test_ids_texts_and_numbers_differing_is_no_difference():
    assert said(completion(), completion("chatcmpl-other", "something else entirely", created=2.5)) == []
    assert differences(stream_shape(openai_stream(["a", "b"])), stream_shape(openai_stream(["x"] * 7, "c2"))) == []
    before, after = (
        anthropic_stream(ANTHROPIC),
        anthropic_stream([*ANTHROPIC[:3], *["content_block_delta"] * 9, *ANTHROPIC[5:]], "other"),
    )
    assert differences(stream_shape(before), stream_shape(after)) == []


def test_a_missing_key_is_one_difference_not_one_per_field_below_it():
    assert said(completion(), completion(usage=None)) == ["lacks usage: object that sends"]
    assert said(completion(usage=None), completion()) == ["sends usage: object that does not"]


def test_a_type_change_is_a_difference():
    message = {"role": "assistant", "content": [{"type": "text", "text": "x"}]}
    parts = completion(choices=[{"index": 0, "message": message, "finish_reason": "stop"}])
    assert said(completion(), parts) == ["sends choices[].message.content: array where sends string"]
    assert said(completion(), completion(created="1700000000")) == ["sends created: string where sends number"]
    assert said(completion(), completion(id=None)) == ["lacks id: string that sends"]


def test_an_openai_stream_is_its_chunk_kinds_in_order():
    events = stream_shape(openai_stream(["a", "b", "c"])).events
    assert events == (
        "chunk(delta.content, delta.role)",
        "chunk(delta.content)",
        "chunk(finish_reason)",
        "chunk(usage)",
        "[DONE]",
    )


def test_stream_chunks_without_delta_content_or_usage_differ():
    found = differences(
        stream_shape(openai_stream(["a", "b"])), stream_shape(openai_stream(["a", "b"], key="text", usage=False))
    )
    lines = [f"{d.after} {d.joiner} {d.before}" for d in found]
    assert "lacks event chunk(delta.content) that sends" in lines
    assert "sends event chunk(delta.text) that does not" in lines
    assert "lacks event chunk(usage) that sends" in lines
    assert "lacks usage: null in chunk(finish_reason) that sends" in lines
    assert not any("order" in line for line in lines)  # what both send comes in the same order


def test_a_reordered_or_missing_stream_event_is_a_difference():
    before = stream_shape(anthropic_stream(ANTHROPIC))
    reordered = [n for n in ANTHROPIC if n != "ping"]
    reordered[-3], reordered[-2] = reordered[-2], reordered[-3]  # message_delta before content_block_stop
    lines = [f"{d.after} {d.joiner} {d.before}" for d in differences(before, stream_shape(anthropic_stream(reordered)))]
    assert lines == [
        "sends events in the order message_start > content_block_start > content_block_delta > message_delta"
        " > content_block_stop > message_stop where sends message_start > content_block_start > ping"
        " > content_block_delta > content_block_stop > message_delta > message_stop",
        "lacks event ping that sends",
    ]
    no_stop = stream_shape(anthropic_stream(ANTHROPIC[:-1]))
    assert [d.after for d in differences(before, no_stop)] == ["lacks event message_stop"]


def test_an_event_whose_data_changed_shape_is_named_with_its_event():
    before = stream_shape(anthropic_stream(ANTHROPIC))
    text = anthropic_stream(ANTHROPIC).decode().replace('"usage": {"output_tokens": 2}', '"usage": null')
    found = differences(before, stream_shape(text.encode()))
    assert [f"{d.after} {d.joiner} {d.before}" for d in found] == [
        "sends usage: null in message_delta where sends object"
    ]


def test_sse_framing_details_are_not_shape():
    plain = stream_shape(anthropic_stream(ANTHROPIC))
    crlf = anthropic_stream(ANTHROPIC).replace(b"\n", b"\r\n").replace(b"event: ", b"event:")
    assert stream_shape(b": keep-alive comment\n\n" + crlf) == plain


@pytest.mark.parametrize(
    ("raw", "problem"),
    [(b"<html>", "not JSON"), (b"[1, 2]", "a JSON array, not an object"), (b'"x"', "a JSON string, not an object")],
)
def test_an_answer_without_a_shape_is_refused_naming_what_it_is(raw, problem):
    with pytest.raises(ShapeError, match=problem):
        shape(raw)


def test_a_stream_without_events_or_with_a_broken_event_has_no_shape():
    with pytest.raises(ShapeError, match="a stream without events"):
        stream_shape(b": only a comment\n\n")
    with pytest.raises(ShapeError, match=r"event 2 \(data\): not JSON"):
        stream_shape(b'data: {"a": 1}\n\ndata: {broken\n\n')


def test_the_contract_section_takes_a_subset_of_the_probes(tmp_path):
    path = tmp_path / "gatewayd.toml"
    base = '[providers.a]\nkind = "openai"\nbase_url = "http://127.0.0.1:1/v1"\n'
    path.write_text(base)
    assert config.load(path, {}).contract.probes == ("chat", "chat-stream", "messages", "messages-stream")
    path.write_text(base + '[contract]\nprobes = ["messages-stream", "chat"]\ntimeout_s = 3\n')
    assert config.load(path, {}).contract == config.ContractSection(("messages-stream", "chat"), 3.0)
    assert config.load(path, {"GATEWAYD_CONTRACT_PROBES": '["chat"]'}).contract.probes == ("chat",)
    for bad, field in (
        (
            'probes = ["chat", "embeddings"]',
            "contract.probes: must list one or more of chat, chat-stream, messages, messages-stream, each once "
            "('embeddings' is not one)",
        ),
        ("probes = []", "contract.probes: must list one or more"),
        ('probes = ["chat", "chat"]', "contract.probes: must list one or more"),
        ("timeout_s = 0", "contract.timeout_s: must be above 0 and at most 300"),
        ("retries = 2", "Object contains unknown field `retries` - at `$.contract`"),
    ):
        path.write_text(base + f"[contract]\n{bad}\n")
        with pytest.raises(config.ConfigError) as info:
            config.load(path, {})
        assert field in str(info.value) and "\n" not in str(info.value), str(info.value)
