"""Usage read from answers of both protocols (gatewayd.server.usage): whole answers, streams
read at their ends, the usage chunk stripped however the stream is cut into chunks, the
request asking for it, and prices. No network: these are the functions the pipeline calls."""

from __future__ import annotations

import json

import pytest

from gatewayd.control.documents import Price, Prices
from gatewayd.server import usage
from gatewayd.server.meter import Meter
from gatewayd.server.usage import Counts


def sse(*events: dict | str) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, str) else json.dumps(e)).encode() + b"\n\n" for e in events)


OPENAI_STREAM = sse(
    {"id": "c1", "choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": None},
    {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None},
    {"id": "c1", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}},
    "[DONE]",
)
ANTHROPIC_STREAM = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"m1","usage":'
    b'{"input_tokens":7,"output_tokens":1,"cache_read_input_tokens":4}}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"text":"\\"usage\\" hi"}}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
    b'"usage":{"output_tokens":15}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


def test_whole_answers_of_both_protocols():
    openai = {"usage": {"prompt_tokens": 10, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 6}}}
    assert usage.read_answer(json.dumps(openai).encode(), False) == (True, Counts(10, 4, 6))
    anthropic = {"usage": {"input_tokens": 3, "output_tokens": 5, "cache_read_input_tokens": 8}}
    assert usage.read_answer(json.dumps(anthropic).encode(), True) == (True, Counts(11, 5, 8))
    assert usage.read_answer(b'{"usage": null}', False) == (True, None)
    assert usage.read_answer(b'{"usage": "lots"}', False) == (True, None)  # an answer all the same
    assert usage.read_answer(b'{"id": "x"}', False) == (True, None)
    assert usage.read_answer(b"[1, 2]", False) == (False, None)
    assert usage.read_answer(b'{"a": "\xff"}', False) == (False, None)


def test_streams_are_read_at_their_ends():
    assert usage.read_stream(OPENAI_STREAM[:2048], OPENAI_STREAM[-2048:], False) == Counts(9, 3, 0)
    assert usage.read_stream(ANTHROPIC_STREAM[:2048], ANTHROPIC_STREAM[-2048:], True) == Counts(11, 15, 4)
    no_usage = sse({"choices": [{"delta": {"content": "x"}}]}, "[DONE]")
    assert usage.read_stream(no_usage, no_usage, False) is None
    broken = ANTHROPIC_STREAM.split(b"event: message_delta")[0]  # broke off: message_start only
    assert usage.read_stream(broken, broken, True) == Counts(11, 1, 4)


@pytest.mark.parametrize("size", [1, 7, 64, 100_000])
def test_the_usage_chunk_is_stripped_however_the_stream_is_cut(size):
    stripper = usage.UsageStripper()
    chunks = [OPENAI_STREAM[i : i + size] for i in range(0, len(OPENAI_STREAM), size)]
    relayed = b"".join(stripper.feed(c) for c in chunks) + stripper.rest()
    events = [e for e in relayed.split(b"\n\n") if e]
    assert len(events) == 3 and events[-1] == b"data: [DONE]"
    assert all(json.loads(e[6:])["choices"] for e in events[:-1])
    assert relayed == OPENAI_STREAM.replace(OPENAI_STREAM.split(b"\n\n")[2] + b"\n\n", b"")


def test_a_stream_request_asks_for_usage_and_says_whether_the_client_did():
    body, asked = usage.ask_for_usage(b' {"model": "m", "stream": true}')
    assert json.loads(body)["stream_options"] == {"include_usage": True} and not asked
    body, asked = usage.ask_for_usage(b'{"stream": true, "stream_options": {"include_usage": false, "x": 1}}')
    assert json.loads(body)["stream_options"] == {"include_usage": True, "x": 1} and not asked
    same = b'{"stream": true, "stream_options": {"include_usage": true}}'
    assert usage.ask_for_usage(same) == (same, True) and usage.client_asked(same)
    assert not usage.client_asked(b'{"stream": true}')


def test_prices_by_exact_name_then_longest_glob_and_cost():
    prices = Prices(
        "EUR",
        {"oa": {"gpt-*": Price(1.0, 2.0), "gpt-4o*": Price(4.0, 8.0, 2.0), "gpt-4o-mini": Price(0.5, 1.0)}},
    )
    assert prices.price("oa", "gpt-4o-2024") == Price(4.0, 8.0, 2.0)
    assert prices.price("oa", "gpt-4o-mini") == Price(0.5, 1.0)
    assert prices.price("oa", "gpt-3") == Price(1.0, 2.0)
    assert prices.price("oa", "claude") is None and prices.price("other", "gpt-4o") is None
    # 1M prompt tokens of which 400k cached, 500k completion: 0.6*4 + 0.4*2 + 0.5*8
    assert usage.cost(Price(4.0, 8.0, 2.0), Counts(1_000_000, 500_000, 400_000)) == pytest.approx(7.2)
    assert usage.cost(Price(4.0, 8.0), Counts(1_000_000, 0, 400_000)) == pytest.approx(4.0)  # cached at input's
    assert usage.cost(None, Counts(1, 1)) is None
    meter = Meter()
    priced = meter.price(prices, 3, "oa", "gpt-4o-1", Counts(1_000_000, 0), saved=False)
    assert (priced.cost, priced.currency, priced.version) == (4.0, "EUR", 3)
    meter.count("acme", "bot", "gpt-4o-1", "oa", priced)
    meter.count("acme", "bot", "gpt-4o-1", "oa", meter.price(prices, 3, "oa", "gpt-4o-1", Counts(10, 5), saved=True))
    ((labels, row),) = meter.rows()
    assert labels == ("acme", "bot", "gpt-4o-1", "oa", 3, "EUR") and row[:5] == [2, 1_000_000, 0, 0, 4.0]
    assert row[5:7] == [10, 5]
