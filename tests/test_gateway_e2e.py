"""The official openai and anthropic SDKs against a real `gatewayd serve` and mock provider."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
import urllib.request

import anthropic
import httpx
import openai
import pytest
from conftest import start_provider_mock

from gatewayd import _core
from support.gateway import KEYS
from support.procs import stop_process


@pytest.fixture(scope="module")
def gateway(gateway_each_interface):
    """This suite runs against ASGI and RSGI alike (`[server] interface`)."""
    return gateway_each_interface


def oa(gateway, key=KEYS["acme"], **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, **kw)


def an(gateway, key=KEYS["acme"]) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)


def mock_requests(port: int) -> list[dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_mock/requests") as r:
        return json.load(r)


def post(gateway, path: str, body: bytes, headers: dict | None = None) -> httpx.Response:
    h = {"authorization": f"Bearer {KEYS['acme']}", "content-type": "application/json", **(headers or {})}
    return httpx.post(gateway.url + path, content=body, headers=h, timeout=10)


def test_chat_completion_round_trip_carries_versions(gateway):
    raw = oa(gateway).chat.completions.with_raw_response.create(
        model="mock-gpt", messages=[{"role": "user", "content": "hello there"}]
    )
    reply = raw.parse()
    assert "hello there" in reply.choices[0].message.content
    assert raw.headers["x-gatewayd-policy-version"] == "1"
    assert raw.headers["x-gatewayd-routing-version"] == "1"
    assert raw.headers["x-gatewayd-config-version"] == "1"
    assert raw.headers["x-gatewayd-cache"] == "bypass"
    # No id was sent: the gateway made one (32 hex digits, unique, see request::ids).
    assert re.fullmatch("[0-9a-f]{32}", raw.headers["x-request-id"])


def test_chat_streaming_passes_chunks_through(gateway):
    stream = oa(gateway).chat.completions.create(
        model="mock-gpt", messages=[{"role": "user", "content": "stream me"}], stream=True
    )
    chunks = list(stream)
    assert len(chunks) > 2
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "stream me" in text


def test_completions_embeddings_and_models(gateway):
    client = oa(gateway)
    completion = client.completions.create(model="mock-gpt", prompt="say hi")
    assert "say hi" in completion.choices[0].text
    embedding = client.embeddings.create(model="mock-embed", input=["a", "b"])
    assert len(embedding.data) == 2 and len(embedding.data[0].embedding) > 0
    assert [m.id for m in client.models.list()] == ["mock-gpt", "mock-claude"]


def test_anthropic_messages_plain_and_streaming(gateway):
    client = an(gateway)
    msg = client.messages.create(
        model="mock-claude", max_tokens=64, system="be brief", messages=[{"role": "user", "content": "hi claude"}]
    )
    assert "hi claude" in msg.content[0].text
    with client.messages.stream(
        model="mock-claude", max_tokens=64, messages=[{"role": "user", "content": "stream claude"}]
    ) as stream:
        text = "".join(stream.text_stream)
    assert "stream claude" in text


def test_the_provider_gets_its_api_headers_and_the_ones_the_client_chose(gateway, mock_port):
    body = json.dumps({"model": "mock-claude", "max_tokens": 8, "messages": [{"role": "user", "content": "v"}]})
    # No anthropic-version from the client: the gateway sends the one it speaks.
    assert post(gateway, "/v1/messages", body.encode()).status_code == 200
    sent = mock_requests(mock_port)[-1]["headers"]
    assert sent["anthropic-version"] == "2023-06-01" and "anthropic-beta" not in sent
    chosen = {"anthropic-version": "2024-01-01", "anthropic-beta": "tools-1", "x-unlisted": "stays behind"}
    assert post(gateway, "/v1/messages", body.encode(), chosen).status_code == 200
    sent = mock_requests(mock_port)[-1]["headers"]
    assert (sent["anthropic-version"], sent["anthropic-beta"]) == ("2024-01-01", "tools-1")
    assert "x-unlisted" not in sent
    chat = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "v"}]}).encode()
    assert post(gateway, "/v1/chat/completions", chat, {"openai-beta": "assistants=v2"}).status_code == 200
    assert mock_requests(mock_port)[-1]["headers"]["openai-beta"] == "assistants=v2"
    assert post(gateway, "/v1/chat/completions", chat).status_code == 200
    sent = mock_requests(mock_port)[-1]["headers"]
    assert "openai-beta" not in sent and "anthropic-version" not in sent


def test_denied_request_names_the_rule_and_never_reaches_upstream(gateway, mock_port):
    before = len(mock_requests(mock_port))
    with pytest.raises(openai.PermissionDeniedError) as err:
        oa(gateway).chat.completions.create(
            model="mock-gpt", messages=[{"role": "user", "content": "my card is 4111 1111 1111 1111"}]
        )
    assert err.value.status_code == 403
    assert "block-cards" in err.value.message
    assert len(mock_requests(mock_port)) == before
    with pytest.raises(anthropic.PermissionDeniedError):
        an(gateway).messages.create(
            model="mock-claude", max_tokens=8, messages=[{"role": "user", "content": "SwordFish please"}]
        )


def test_redaction_rewrites_what_the_upstream_receives(gateway, mock_port):
    reply = oa(gateway).chat.completions.create(
        model="mock-gpt", messages=[{"role": "user", "content": "mail bob@example.com now"}]
    )
    last = mock_requests(mock_port)[-1]
    sent = json.dumps(last["body"])
    assert "bob@example.com" not in sent and "[EMAIL]" in sent
    assert "bob@example.com" not in reply.choices[0].message.content


def test_policy_route_action_sends_free_tier_to_the_small_model(gateway, mock_port):
    oa(gateway, key=KEYS["free"]).chat.completions.create(
        model="mock-gpt", messages=[{"role": "user", "content": "route me"}]
    )
    assert mock_requests(mock_port)[-1]["body"]["model"] == "mock-small"


def test_cache_hit_for_deterministic_requests(gateway, mock_port):
    client = oa(gateway)
    ask = dict(model="mock-gpt", temperature=0, messages=[{"role": "user", "content": "cache me please"}])
    first = client.chat.completions.with_raw_response.create(**ask)
    count = len(mock_requests(mock_port))
    second = client.chat.completions.with_raw_response.create(**ask)
    assert first.headers["x-gatewayd-cache"] == "miss"
    assert second.headers["x-gatewayd-cache"] == "hit"
    assert len(mock_requests(mock_port)) == count  # served without the upstream
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    # Another tenant never sees acme's entry.
    other = oa(gateway, key=KEYS["free"]).chat.completions.with_raw_response.create(**ask)
    assert other.headers["x-gatewayd-cache"] == "miss"


def test_missing_or_wrong_key_is_401(gateway):
    with pytest.raises(openai.AuthenticationError):
        oa(gateway, key="nope").chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.AuthenticationError):
        an(gateway, key="nope").messages.create(
            model="mock-claude", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    r = httpx.post(gateway.url + "/v1/chat/completions", content=b"{}", timeout=5)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_client_errors_get_openai_shaped_json(gateway):
    r = post(gateway, "/v1/chat/completions", b"{not json")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = post(gateway, "/v1/chat/completions", b'{"model": "mock-gpt"}')
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]
    r = post(
        gateway,
        "/v1/chat/completions",
        b'{"model":"mock-gpt","messages":[{"role":"user","content":"' + b"a" * 70000 + b'"}]}',
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = httpx.get(gateway.url + "/v1/nowhere", timeout=5)
    assert r.status_code == 404 and "error" in r.json()
    r = post(gateway, "/v1/messages", b"[]")
    assert r.status_code == 400 and r.json()["type"] == "error"


def test_unknown_model_is_404(gateway):
    with pytest.raises(openai.NotFoundError) as err:
        oa(gateway).chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "model_not_found"


def test_upstream_failures_map_to_502_504_and_pass_through(gateway):
    client = oa(gateway)
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="dead-model", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 502
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="slow-model", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 504
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="ratelimited-model", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 429
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="unknown-upstream-model", messages=[{"role": "user", "content": "x"}])


def test_a_failing_provider_hands_the_request_to_its_fallbacks(gateway, mock_port):
    """failover-*: `dead` refuses the connection, `ratelimited` answers 429, `mock` answers
    (as mock-gpt); exhausted-*: every upstream fails and the last failure is the answer.
    The audit record names who answered and what failed first."""
    client = oa(gateway)
    reply = client.chat.completions.create(model="failover-model", messages=[{"role": "user", "content": "fall over"}])
    assert reply.choices[0].message.content == "echo: fall over"
    assert [r["body"]["model"] for r in mock_requests(mock_port)[-2:]] == ["failover-model", "mock-gpt"]
    deterministic = {"model": "failover-model", "temperature": 0, "messages": [{"role": "user", "content": "again"}]}
    caching = [post(gateway, "/v1/chat/completions", json.dumps(deterministic).encode()) for _ in range(2)]
    assert [r.headers["x-gatewayd-cache"] for r in caching] == ["miss", "miss"]  # a fallback's answer is not kept
    stream = client.chat.completions.create(
        model="failover-model", messages=[{"role": "user", "content": "stream over"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "echo: stream over"
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="exhausted-model", messages=[{"role": "user", "content": "x"}])
    records = {r.get("model"): r for r in gateway.audit_records() if r.get("kind") == "request"}
    answered, spent = records["failover-model"], records["exhausted-model"]
    assert (answered["status"], answered["upstream"], answered["upstream_model"]) == (200, "mock", "mock-gpt")
    assert answered["failovers"][0].startswith("dead: unreachable: ")
    assert answered["failovers"][1] == "ratelimited: status 429"
    assert (spent["status"], spent["upstream"], len(spent["failovers"])) == (429, "ratelimited", 1)


def test_provider_key_replaces_the_callers_key(gateway, mock_port):
    # The mock accepts only the provider key: the caller's gatewayd key is refused there ...
    direct = openai.OpenAI(base_url=f"http://127.0.0.1:{mock_port}/v1", api_key=KEYS["acme"], max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        direct.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "x"}])
    # ... and accepted through the gateway, which sends the provider key instead.
    reply = oa(gateway).chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "key"}])
    assert reply.choices[0].message.content


@pytest.mark.parametrize("flavour", ["openai", "anthropic"])
def test_upstream_killed_mid_stream_ends_with_a_clean_error(gateway, fragile_port, flavour):
    _, fragile = start_provider_mock(fragile_port)
    received: list[str] = []
    failure: list[BaseException] = []

    def consume() -> None:
        try:
            if flavour == "openai":
                stream = oa(gateway).chat.completions.create(
                    model="fragile-model", messages=[{"role": "user", "content": "long story"}], stream=True
                )
                for chunk in stream:
                    received.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
            else:
                with an(gateway).messages.stream(
                    model="fragile-model", max_tokens=64, messages=[{"role": "user", "content": "long story"}]
                ) as stream:
                    for text in stream.text_stream:
                        received.append(text)
        except BaseException as exc:  # noqa: BLE001 - the failure is what we assert on
            failure.append(exc)

    reader = threading.Thread(target=consume)
    reader.start()
    deadline = time.monotonic() + 10
    while len(received) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(received) >= 2, "the stream never started"
    stop_process(fragile, sig=signal.SIGKILL)
    reader.join(timeout=15)
    assert not reader.is_alive()
    assert failure, "the client must see an error, not a silently truncated stream"
    assert isinstance(failure[0], (openai.APIError, anthropic.APIError)), repr(failure[0])
    record = [
        r
        for r in gateway.audit_records()
        if r.get("model") == "fragile-model" and r["api"] == ("chat" if flavour == "openai" else "messages")
    ][-1]
    assert record["status"] == 502 and record["error"].startswith("protocol")


@pytest.mark.parametrize("flavour", ["openai", "anthropic"])
def test_a_client_that_stops_reading_a_stream_stops_the_provider(gateway, fragile_port, flavour):
    """ "Stop generating": the SDK closes the stream after two events. The gateway closes
    its stream from the provider there, so the provider stops (the mock counts the stream
    as abandoned, not sent to its end), and the record says 499 with what was relayed;
    left alone the stream would run 15 s (50 events, 300 ms apart)."""
    url, fragile = start_provider_mock(fragile_port)
    request_id = f"stopped-stream-{flavour}-{time.monotonic_ns()}"
    headers = {"x-request-id": request_id}
    messages = [{"role": "user", "content": "a long story, please"}]
    try:
        if flavour == "openai":
            stream = oa(gateway).chat.completions.create(
                model="fragile-model", messages=messages, stream=True, extra_headers=headers
            )
            next(stream), next(stream)
            stream.close()
        else:
            with an(gateway).messages.stream(
                model="fragile-model", max_tokens=64, messages=messages, extra_headers=headers
            ) as events:
                texts = iter(events.text_stream)
                next(texts), next(texts)
        deadline = time.monotonic() + 10
        while True:
            with urllib.request.urlopen(url + "/_mock/streams") as r:
                streams = json.load(r)
            records = [r for r in gateway.audit_records() if r.get("request_id") == request_id]
            if records and streams["abandoned"]:
                break
            assert time.monotonic() < deadline, f"still going after 10 s: {streams}, records {records}"
            time.sleep(0.2)
    finally:
        stop_process(fragile)
    assert streams == {"completed": 0, "abandoned": 1}
    (record,) = records
    assert record["status"] == 499, record
    assert re.fullmatch(r"client closed the connection after \d+ bytes of the stream; .*", record["error"])
    # What the provider generated until then is charged, though its usage never came.
    assert record["prompt_tokens"] > 0 and record["completion_tokens"] >= 2


def test_a_worker_freezes_its_start_up_objects_out_of_the_collectors_passes(gateway):
    """Their full passes would walk every module and document each time (a pause of
    several ms every few thousand requests); /metrics shows what each worker froze, and
    the passes the collector made, by generation."""
    for n in range(30):  # something for the collector to see
        oa(gateway).chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": f"gc {n}"}])
    deadline = time.monotonic() + 5  # the worker writes its metrics once a second
    while True:
        text = httpx.get(gateway.url + "/metrics", timeout=10).text
        frozen = [float(v) for v in re.findall(r"^gatewayd_python_gc_frozen_objects\{[^}]*\} (\S+)$", text, re.M)]
        passes = re.findall(r'^gatewayd_python_gc_collections_total\{[^}]*generation="(\d)"\} (\S+)$', text, re.M)
        if frozen and passes or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert frozen and min(frozen) > 10_000, frozen  # every worker froze what start-up made
    assert sorted({generation for generation, _ in passes}) == ["0", "1", "2"]
    assert sum(float(count) for generation, count in passes if generation == "0") > 0


def test_audit_chain_verifies_and_records_every_request(gateway):
    raw = oa(gateway).chat.completions.with_raw_response.create(
        model="mock-gpt", messages=[{"role": "user", "content": "audit me"}]
    )
    request_id = raw.headers["x-request-id"]
    records = gateway.audit_records()
    mine = [r for r in records if r.get("request_id") == request_id]
    assert len(mine) == 1
    rec = mine[0]
    assert rec["decision"] == "allow" and rec["status"] == 200 and rec["policy_version"] == 1
    assert "provider-secret" not in json.dumps(records)
    assert any(r.get("decision") == "deny" and r.get("rule") == "block-cards" for r in records)
    for chain in _core.list_chains(str(gateway.audit_dir)):
        report = _core.verify_chain(str(gateway.audit_dir), chain)
        assert report["records"] > 0
    done = gateway.cli("audit", "verify")
    assert "intact" in done.stdout
