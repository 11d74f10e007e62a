"""Usage and spend on every request: token counts from both APIs' answers (plain, streamed,
cached), prices from the versioned config, cost in the audit record, `/metrics` counters and
`gatewayd usage` over the chains. A real gateway, the mock provider and the official SDKs."""

from __future__ import annotations

import json
import re
import time
import urllib.request

import anthropic
import httpx
import openai
import pytest

from support.gateway import KEYS, RUNTIME, Gateway

PRICES = """\
prices:
  currency: USD
  providers:
    mock: {"mock-*": {input: 2, output: 8, cached: 1}}
    mock-anthropic: {"mock-*": {input: 3, output: 15}}
"""
# The same prices but dearer output on the mock: version 3, rolled back in a test.
DEARER = PRICES.replace("output: 8", "output: 80")


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock_port, fragile_port):
    gateway = Gateway(tmp_path_factory.mktemp("usage"), mock_port, fragile_port).start()
    priced = gateway.root / "priced.yaml"
    priced.write_text(RUNTIME + PRICES)
    gateway.cli("push", "config", str(priced), "--reason", "prices")
    gateway.cli("activate", "config", "2", "--reason", "prices")
    yield gateway
    gateway.stop()


def oa(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=KEYS["acme"], max_retries=0)


def an(gw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=KEYS["acme"], max_retries=0)


def record(gw, request_id: str) -> dict:
    (found,) = [r for r in gw.audit_records() if r.get("request_id") == request_id]
    return found


def usd(prompt: int, completion: int, input_price: float, output_price: float) -> float:
    return (prompt * input_price + completion * output_price) / 1_000_000


def test_openai_plain_answer_records_its_tokens_and_cost(gw):
    raw = oa(gw).chat.completions.with_raw_response.create(
        model="mock-gpt", messages=[{"role": "user", "content": "count these five words"}]
    )
    usage = raw.parse().usage
    rec = record(gw, raw.headers["x-request-id"])
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert rec["cost"] == pytest.approx(usd(usage.prompt_tokens, usage.completion_tokens, 2, 8))
    assert (rec["currency"], rec["price_version"], rec["key"]) == ("USD", 2, rec["key"])
    assert rec["key"].startswith("static:")


def test_openai_stream_without_usage_asked_hides_the_chunk_but_records_it(gw):
    messages = [{"role": "user", "content": "stream and count me"}]
    plain = oa(gw).chat.completions.create(model="mock-gpt", messages=messages).usage
    raw = oa(gw).chat.completions.with_raw_response.create(model="mock-gpt", messages=messages, stream=True)
    chunks = list(raw.parse())
    assert chunks and all(c.usage is None for c in chunks)  # the client never sees the extra chunk
    assert all(c.choices for c in chunks)
    rec = record(gw, raw.headers["x-request-id"])
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (plain.prompt_tokens, plain.completion_tokens)
    assert rec["cost"] == pytest.approx(usd(plain.prompt_tokens, plain.completion_tokens, 2, 8))


def test_openai_stream_with_usage_asked_keeps_the_chunk(gw):
    raw = oa(gw).chat.completions.with_raw_response.create(
        model="mock-gpt",
        messages=[{"role": "user", "content": "I asked for usage"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(raw.parse())
    (last,) = [c for c in chunks if c.usage is not None]
    assert not last.choices
    rec = record(gw, raw.headers["x-request-id"])
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (last.usage.prompt_tokens, last.usage.completion_tokens)


def test_a_cached_stream_records_what_it_saved_and_still_hides_the_chunk(gw):
    def ask():
        return oa(gw).chat.completions.with_raw_response.create(
            model="mock-gpt",
            messages=[{"role": "user", "content": "cache this stream please"}],
            stream=True,
            temperature=0,
        )

    first, second = ask(), ask()
    assert list(first.parse()) and second.headers["x-gatewayd-cache"] == "hit"
    chunks = list(second.parse())
    assert chunks and all(c.usage is None for c in chunks)
    spent, saved = record(gw, first.headers["x-request-id"]), record(gw, second.headers["x-request-id"])
    assert saved["cache"] == "hit" and saved["cost"] == 0
    assert (saved["prompt_tokens"], saved["completion_tokens"]) == (spent["prompt_tokens"], spent["completion_tokens"])
    assert saved["saved_cost"] == pytest.approx(spent["cost"]) and spent["cost"] > 0


def test_a_cached_plain_answer_records_what_it_saved(gw):
    def ask():
        return oa(gw).chat.completions.with_raw_response.create(
            model="mock-gpt", messages=[{"role": "user", "content": "cache me whole"}], temperature=0
        )

    ask()
    second = ask()
    assert second.headers["x-gatewayd-cache"] == "hit"
    usage = second.parse().usage
    saved = record(gw, second.headers["x-request-id"])
    assert (saved["prompt_tokens"], saved["completion_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert saved["saved_cost"] == pytest.approx(usd(usage.prompt_tokens, usage.completion_tokens, 2, 8))


def test_anthropic_plain_and_streamed_answers_record_their_tokens(gw):
    messages = [{"role": "user", "content": "hello claude count me"}]
    raw = an(gw).messages.with_raw_response.create(model="mock-claude", max_tokens=64, messages=messages)
    usage = raw.parse().usage
    rec = record(gw, raw.headers["x-request-id"])
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (usage.input_tokens, usage.output_tokens)
    assert rec["upstream"] == "mock-anthropic"
    assert rec["cost"] == pytest.approx(usd(usage.input_tokens, usage.output_tokens, 3, 15))
    with an(gw).messages.stream(model="mock-claude", max_tokens=64, messages=messages) as stream:
        final = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    rec = record(gw, request_id)
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (final.usage.input_tokens, final.usage.output_tokens)


def test_anthropic_cached_stream_records_what_it_saved(gw):
    body = {
        "model": "mock-claude",
        "max_tokens": 64,
        "temperature": 0,
        "stream": True,
        "messages": [{"role": "user", "content": "cache the claude stream"}],
    }
    headers = {"x-api-key": KEYS["acme"], "anthropic-version": "2023-06-01"}
    answers = [httpx.post(gw.url + "/v1/messages", json=body, headers=headers, timeout=10) for _ in range(2)]
    assert answers[1].headers["x-gatewayd-cache"] == "hit"
    spent, saved = (record(gw, a.headers["x-request-id"]) for a in answers)
    assert spent["prompt_tokens"] > 0 and spent["completion_tokens"] > 0
    assert (saved["prompt_tokens"], saved["completion_tokens"]) == (spent["prompt_tokens"], spent["completion_tokens"])


def test_embeddings_record_their_prompt_tokens(gw):
    raw = oa(gw).embeddings.with_raw_response.create(model="mock-embed", input=["one two three"])
    rec = record(gw, raw.headers["x-request-id"])
    assert rec["prompt_tokens"] == raw.parse().usage.prompt_tokens > 0 and rec["completion_tokens"] == 0


def test_a_price_rollback_changes_the_cost_of_the_next_request(gw):
    dearer = gw.root / "dearer.yaml"
    dearer.write_text(RUNTIME + DEARER)
    gw.cli("push", "config", str(dearer), "--reason", "output is dearer")
    messages = [{"role": "user", "content": "what does this cost"}]

    def cost():
        raw = oa(gw).chat.completions.with_raw_response.create(model="mock-gpt", messages=messages)
        rec = record(gw, raw.headers["x-request-id"])
        return rec["cost"], rec["price_version"], raw.parse().usage

    gw.cli("activate", "config", "3", "--reason", "new prices")
    dear, version, usage = cost()
    assert version == 3 and dear == pytest.approx(usd(usage.prompt_tokens, usage.completion_tokens, 2, 80))
    gw.cli("rollback", "config", "--reason", "wrong prices")
    cheap, version, _ = cost()
    assert version == 2 and cheap == pytest.approx(usd(usage.prompt_tokens, usage.completion_tokens, 2, 8))
    at = gw.cli("at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))).stdout
    assert "config/default: version 2" in at
    assert "price mock mock-*: input 2, output 8, cached 1 USD per million tokens" in at


def test_bad_prices_are_refused_naming_the_field(gw):
    bad = gw.root / "bad-prices.yaml"
    bad.write_text(RUNTIME + "prices: {currency: dollars}\n")
    done = gw.cli("push", "config", str(bad), "--reason", "x", check=False)
    assert done.returncode == 2 and "prices.currency" in done.stderr
    bad.write_text(RUNTIME + "prices: {providers: {mock: {'mock-*': {input: -1}}}}\n")
    done = gw.cli("push", "config", str(bad), "--reason", "x", check=False)
    assert done.returncode == 2 and "prices.providers.mock.mock-*" in done.stderr


def metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_usage_totals_equal_the_metrics(gw):
    oa(gw).chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "one more for totals"}])
    with urllib.request.urlopen(gw.url + "/metrics") as r:
        metrics = r.read().decode()
    report = json.loads(gw.cli("usage", "--by", "tenant", "--json").stdout)
    (acme,) = [row for row in report["rows"] if row["tenant"] == "acme"]
    assert acme["requests"] == metric_sum(metrics, "gatewayd_usage_requests_total", tenant="acme") > 5
    assert acme["prompt_tokens"] == metric_sum(metrics, "gatewayd_tokens_total", tenant="acme", kind="prompt")
    assert acme["completion_tokens"] == metric_sum(metrics, "gatewayd_tokens_total", tenant="acme", kind="completion")
    assert acme["cost"] == pytest.approx(metric_sum(metrics, "gatewayd_cost_total", tenant="acme"))
    assert acme["saved_cost"] == pytest.approx(metric_sum(metrics, "gatewayd_cost_saved_total", tenant="acme"))
    by_model = json.loads(gw.cli("usage", "--by", "model", "--json").stdout)
    assert {"mock-gpt", "mock-claude", "mock-embed"} <= {row["model"] for row in by_model["rows"]}
    csv_out = gw.cli("usage", "--by", "key", "--csv").stdout.splitlines()
    assert csv_out[0].startswith("key,currency,requests,prompt_tokens")
    table = gw.cli("usage", "--from", "2000-01-01T00:00:00Z", "--to", "2100-01-01T00:00:00Z").stdout
    assert re.search(r"^acme\s+USD\s+\d+", table, re.M) and "every link verified" in table
    nothing = json.loads(gw.cli("usage", "--to", "2000-01-01T00:00:00Z", "--json").stdout)
    assert nothing["rows"] == [] and nothing["totals"] == []
    bad = gw.cli("usage", "--from", "yesterday", check=False)
    assert bad.returncode == 2 and "yesterday" in bad.stderr
