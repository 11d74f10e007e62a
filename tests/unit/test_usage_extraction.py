"""Usage read from answers of both protocols (gatewayd.server.usage): whole answers, streams
read at their ends, the usage chunk stripped however the stream is cut into chunks, the
request asking for it; and prices, applied by a real engine when it records. No network:
these are the functions the pipeline calls."""

from __future__ import annotations

import json

import pytest

from gatewayd import _core
from gatewayd.control.documents import Price, Prices, RuntimeConfig
from gatewayd.control.snapshot import Served
from gatewayd.server import usage
from gatewayd.server.usage import Counts

ROUTING = json.dumps({"routes": [{"match": "gpt-*", "provider": "oa"}]}).encode()


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


def test_the_engine_prices_usage_under_the_request_config_version_and_counts_it(tmp_path):
    """A record's cost comes from the prices of the config version the request was served
    under (looked up once per model); the meter counts records with a caller's key, a
    cache hit's tokens (`record_hit`) apart, as what it saved."""
    prices = Prices("EUR", {"oa": {"gpt-4o*": Price(4.0, 8.0, 2.0), "gpt-4o-mini": Price(0.5, 1.0)}})
    engine = _core.Engine(16, 1 << 20, str(tmp_path), "r1", 1 << 20)
    policy, routing = _core.Policy(b'{"default": "allow"}', 1), _core.Routing(ROUTING, 1, [("oa", "openai")])

    def admit(config_version: int, model: str, cache=_core.CacheMode.OFF):
        versions = _core.Versions(1, 1, config_version)
        engine.fence([versions])
        served = Served(policy, None, routing, RuntimeConfig(prices=prices), versions, 0)
        body = json.dumps({"model": model, "temperature": 0, "messages": [{"role": "user", "content": "hi"}]})
        return engine.admit(
            served=served, api="chat", tenant="acme", request_id="r", headers=[], body=body.encode(),
            cache=cache, vary="",
        )  # fmt: skip

    # 1M prompt tokens of which 400k cached, 500k completion: 0.6*4 + 0.4*2 + 0.5*8
    miss = admit(3, "gpt-4o-2024", _core.CacheMode.FORCED)
    seq, cost = engine.record(
        miss, status=200, response=b"{}", cache_ttl_s=60, key="bot", counts=Counts(1_000_000, 500_000, 400_000)
    )
    assert cost == pytest.approx(7.2)
    hit = admit(3, "gpt-4o-2024", _core.CacheMode.FORCED)
    assert hit.cache == "hit" and hit.cached_usage == (1_000_000, 500_000, 400_000)
    assert engine.record_hit(hit, "bot") == seq + 1  # its saved tokens and cost: below
    # No key: recorded and priced, not counted; no price for the model: cost unknown.
    assert engine.record(admit(3, "gpt-4o-mini"), status=200, counts=Counts(2_000_000, 0))[1] == pytest.approx(1.0)
    assert engine.record(admit(3, "gpt-5"), status=200, key="bot", counts=Counts(10, 1))[1] is None
    assert engine.record(admit(3, "gpt-4o"), status=500, key="bot")[1] is None  # no usage at all
    rows = {labels: row for labels, row in engine.usage_rows()}
    assert rows.keys() == {("acme", "bot", "gpt-4o-2024", "oa", 3, "EUR"), ("acme", "bot", "gpt-5", "oa", 3, "EUR")}
    spent = rows["acme", "bot", "gpt-4o-2024", "oa", 3, "EUR"]
    assert spent[:4] == (2, 1_000_000, 500_000, 400_000) and spent[4] == pytest.approx(7.2)
    assert spent[5:7] == (1_000_000, 500_000) and spent[7] == pytest.approx(7.2)
    assert rows["acme", "bot", "gpt-5", "oa", 3, "EUR"][:5] == (1, 10, 1, 0, 0.0)
    records = [json.loads(r) for r in _core.AuditReader(str(tmp_path), "r1")]
    assert [(r.get("cost"), r.get("saved_cost"), r.get("price_version")) for r in records[:2]] == [
        (pytest.approx(7.2), None, 3),
        (0.0, pytest.approx(7.2), 3),
    ]
    # Another config version is priced by its own prices, even for a model already seen.
    cheaper = Prices("USD", {"oa": {"gpt-4o*": Price(1.0)}})
    versions = _core.Versions(1, 1, 4)
    engine.fence([versions])
    served = Served(policy, None, routing, RuntimeConfig(prices=cheaper), versions, 0)
    body = b'{"model": "gpt-4o-2024", "messages": []}'
    adm = engine.admit(
        served=served, api="chat", tenant="acme", request_id="r", headers=[], body=body,
        cache=_core.CacheMode.OFF, vary="",
    )  # fmt: skip
    assert engine.record(adm, status=200, key="bot", counts=Counts(1_000_000, 5))[1] == 1.0
    assert ("acme", "bot", "gpt-4o-2024", "oa", 4, "USD") in dict(engine.usage_rows())
