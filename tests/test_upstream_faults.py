"""A broken provider through a real gateway, seen by the official SDKs: streams that end
before their last event, 200s that are not JSON, errors without the API's shape, errors
that echo our provider key. None of them is passed off as an answer, cached, or audited
as a success.

The faults come from the bundled mock (``x-mock-fault``, set per provider in the config)
and, for framings no server library sends, from hand-written providers in threads.
"""

from __future__ import annotations

import contextlib
import json

import anthropic
import httpx
import openai
import pytest

from support.gateway import KEYS, PROVIDER_KEY, Gateway
from support.providers import answering, provider_thread

OPENAI_EVENTS = b"".join(
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"%s"},"finish_reason":null}]}\n\n' % piece
    for piece in (b"half an ", b"answer")
)
ANTHROPIC_EVENTS = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message",'
    b'"role":"assistant","model":"m","content":[],"stop_reason":null,"stop_sequence":null,'
    b'"usage":{"input_tokens":1,"output_tokens":1}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"half an answer"}}\n\n'
)
SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
JSON_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
CHAT_ANSWER = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"a whole answer"},"finish_reason":"stop"}]}'
)

UNTIL_CLOSE = SSE_HEAD + b"connection: close\r\n\r\n"  # neither length nor chunked: the body ends with the connection

# Hand-written providers: name -> the parts of what each answers to every request.
RAW_PROVIDERS = {
    # Closed before the last event.
    "eof": [UNTIL_CLOSE + OPENAI_EVENTS],
    "eof-anthropic": [UNTIL_CLOSE + ANTHROPIC_EVENTS],
    # The last event split across two reads: complete.
    "split": [UNTIL_CLOSE + OPENAI_EVENTS + b"data: [DO", b"NE]\n\n"],
    "split-anthropic": [
        UNTIL_CLOSE + ANTHROPIC_EVENTS + b"event: message_st",
        b'op\ndata: {"type":"message_stop"}\n\n',
    ],
    # The announced length ends the stream before its last event, which comes later.
    "short": [SSE_HEAD + b"content-length: %d\r\n\r\n" % len(OPENAI_EVENTS) + OPENAI_EVENTS, b"data: [DONE]\n\n"],
    # ... and a whole answer a few bytes in.
    "clipped": [JSON_HEAD + b"content-length: 40\r\n\r\n" + CHAT_ANSWER[:40], CHAT_ANSWER[40:]],
    # A whole answer, then in the same read another response (a status it would pass for).
    "smuggling": [
        JSON_HEAD
        + b"content-length: %d\r\n\r\n" % len(CHAT_ANSWER)
        + CHAT_ANSWER
        + b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 2\r\n\r\n{}"
    ],
    "html-error": [
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/html\r\nconnection: close\r\n\r\n"
        b"<html><body>upstream connect error</body></html>"
    ],
}
# Mock providers: name -> x-mock-fault.
MOCK_FAULTS = {"cut": "truncate", "garbled": "invalid-json", "echoing": "echo-key", "empty": "empty-error"}

ROUTING = (
    "routes:\n"
    + "".join(
        f'  - {{match: "{name}-*", provider: {name}}}\n  - {{match: "{name}-*", provider: {name}-anthropic}}\n'
        for name in ("eof", "split", "cut", "garbled", "echoing", "empty")
    )
    + "".join(
        f'  - {{match: "{name}-*", provider: {name}}}\n' for name in ("short", "clipped", "smuggling", "html-error")
    )
)


def _providers(raw_urls: dict[str, str], mock_port: int) -> str:
    """The TOML of every faulty provider, appended to the gateway's config."""
    mock = f"http://127.0.0.1:{mock_port}"
    blocks = []
    for name, url in raw_urls.items():
        kind = "anthropic" if name.endswith("-anthropic") else "openai"
        base = url if kind == "anthropic" else url + "/v1"
        blocks.append(f'[providers.{name}]\nkind = "{kind}"\nbase_url = "{base}"\napi_key = "{PROVIDER_KEY}"\n')
    for name, fault in MOCK_FAULTS.items():
        for suffix, kind, base in (("", "openai", mock + "/v1"), ("-anthropic", "anthropic", mock)):
            blocks.append(
                f'[providers.{name}{suffix}]\nkind = "{kind}"\nbase_url = "{base}"\napi_key = "{PROVIDER_KEY}"\n'
                f'headers = {{x-mock-fault = "{fault}"}}\n'
            )
    return "\n" + "\n".join(blocks)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, mock_port, fragile_port):
    with contextlib.ExitStack() as stack:
        urls = {name: stack.enter_context(provider_thread(answering(*parts))) for name, parts in RAW_PROVIDERS.items()}
        root = tmp_path_factory.mktemp("faults")
        gw = Gateway(root, mock_port, fragile_port, extra_providers=_providers(urls, mock_port))
        (root / "routing.yaml").write_text(ROUTING)
        gw.start()
        stack.callback(gw.stop)
        yield gw


def _record(gateway, request_id: str) -> dict:
    [record] = [r for r in gateway.audit_records() if r.get("request_id") == request_id]
    return record


def _post(gateway, api: str, body: dict, request_id: str) -> httpx.Response:
    path = "/v1/messages" if api == "messages" else "/v1/chat/completions"
    headers = {"authorization": f"Bearer {KEYS['acme']}", "x-request-id": request_id}
    return httpx.post(gateway.url + path, json=body, headers=headers, timeout=10)


def _ask(model: str, api: str, text: str) -> dict:
    """A deterministic request (temperature 0): cacheable, were its answer sound."""
    body = {"model": model, "temperature": 0, "messages": [{"role": "user", "content": text}]}
    return {**body, "max_tokens": 64} if api == "messages" else body


def _stream_through_sdk(gateway, model: str, api: str, request_id: str) -> tuple[str, list[str], Exception | None]:
    """Streams one deterministic request with the API's own SDK: (x-gatewayd-cache, the
    texts received, the error the SDK raised or None)."""
    ask = {**_ask(model, api, "tell me a story"), "stream": True, "extra_headers": {"x-request-id": request_id}}
    texts: list[str] = []
    if api == "messages":
        ask["extra_body"] = {"temperature": ask.pop("temperature")}  # not a parameter of this SDK's
        client = anthropic.Anthropic(base_url=gateway.url, api_key=KEYS["acme"], max_retries=0)
        raw, failure = client.messages.with_raw_response.create(**ask), anthropic.APIError
        text_of = lambda event: event.delta.text if event.type == "content_block_delta" else ""  # noqa: E731
    else:
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEYS["acme"], max_retries=0)
        raw, failure = client.chat.completions.with_raw_response.create(**ask), openai.APIError
        text_of = lambda chunk: chunk.choices[0].delta.content or "" if chunk.choices else ""  # noqa: E731
    try:
        for event in raw.parse():
            if text := text_of(event):
                texts.append(text)
    except failure as exc:
        return raw.headers["x-gatewayd-cache"], texts, exc
    return raw.headers["x-gatewayd-cache"], texts, None


@pytest.mark.parametrize(
    "model, api, came",
    [
        ("eof-model", "chat", "half an answer"),  # connection-delimited body, closed before [DONE]
        ("eof-model", "messages", "half an answer"),  # ... before message_stop
        ("cut-model", "chat", "ech"),  # chunked, ended cleanly before [DONE] (the mock)
        ("cut-model", "messages", ""),  # ... before message_stop
        ("short-model", "chat", "half an answer"),  # a content-length that ends it before [DONE]
    ],
)
def test_a_stream_without_its_last_event_ends_in_an_error_and_is_not_cached(gateway, model, api, came):
    """The SDK gets what came, then raises on the gateway's error event; the record says
    502 protocol; the same deterministic request goes upstream again instead of hitting a
    cached half answer."""
    for attempt in range(2):
        request_id = f"{model}-{api}-stream-{attempt}"
        cache, texts, error = _stream_through_sdk(gateway, model, api, request_id)
        assert cache == "miss"
        assert "".join(texts) == came, "the events that came must reach the client"
        assert error is not None, "a stream cut short must make the SDK raise"
        assert "without its last event" in str(error)
        record = _record(gateway, request_id)
        assert record["status"] == 502 and record["error"].startswith("protocol")


@pytest.mark.parametrize("api", ["chat", "messages"])
def test_a_last_event_split_across_reads_completes_the_stream(gateway, api):
    """The guard on the check above: a marker cut in two by the network is still found, so
    the sound stream is served and cached (its repeat is a hit) and audited as a 200."""
    for attempt, cache in enumerate(["miss", "hit"]):
        request_id = f"split-{api}-{attempt}"
        _, texts, error = served = _stream_through_sdk(gateway, "split-model", api, request_id)
        assert (served[0], "".join(texts), error) == (cache, "half an answer", None)
        assert _record(gateway, request_id)["status"] == 200


@pytest.mark.parametrize(
    "model, api",
    [
        ("garbled-model", "chat"),  # HTML with a NUL byte, as application/json (the mock)
        ("garbled-model", "messages"),
        ("cut-model", "chat"),  # JSON cut in half (the mock)
        ("clipped-model", "chat"),  # a content-length shorter than the JSON sent
    ],
)
def test_a_200_that_is_not_a_json_object_is_a_502_never_cached(gateway, model, api):
    for attempt in range(2):
        request_id = f"{model}-{api}-whole-{attempt}"
        reply = _post(gateway, api, _ask(model, api, "answer me"), request_id)
        assert (reply.status_code, reply.headers["x-gatewayd-cache"]) == (502, "miss")
        body = reply.json()
        if api == "messages":
            assert body["type"] == "error" and body["error"]["type"] == "api_error"
        else:
            assert body["error"]["code"] == "upstream_invalid_response"
        assert "not a JSON object" in body["error"]["message"]
        record = _record(gateway, request_id)
        assert record["status"] == 502 and record["error"].startswith("protocol")


@pytest.mark.parametrize(
    "model, api, status",
    [
        ("empty-model", "chat", 500),  # an empty body (the mock)
        ("empty-model", "messages", 500),
        ("html-error-model", "chat", 503),  # an HTML page
    ],
)
def test_an_upstream_error_without_the_apis_shape_is_wrapped_in_it(gateway, model, api, status):
    """The SDK raises its usual status error and finds a message in it naming the
    upstream's status; the status itself stands."""
    ask = _ask(model, api, "fail me")
    if api == "messages":
        ask["extra_body"] = {"temperature": ask.pop("temperature")}
        client = anthropic.Anthropic(base_url=gateway.url, api_key=KEYS["acme"], max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as info:
            client.messages.create(**ask)
        body = info.value.response.json()
        assert body["type"] == "error" and body["error"]["type"] == "api_error"
    else:
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEYS["acme"], max_retries=0)
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(**ask)
        body = info.value.response.json()
        assert body["error"]["type"] == "api_error" and body["error"]["code"] == "upstream_error"
    assert info.value.status_code == status
    assert f"answered {status}" in body["error"]["message"]


@pytest.mark.parametrize("api", ["chat", "messages"])
def test_an_upstream_error_echoing_the_provider_key_is_scrubbed(gateway, api):
    reply = _post(gateway, api, _ask("echoing-model", api, "who am i"), f"echoing-{api}")
    assert reply.status_code == 401
    assert PROVIDER_KEY not in reply.text
    assert "Incorrect API key provided: [REDACTED]" in reply.json()["error"]["message"]
    assert PROVIDER_KEY not in json.dumps(gateway.audit_records())


def test_a_response_followed_by_another_in_the_same_read_is_refused(gateway):
    """A provider that sends more than the response it framed: neither the answer nor the
    status it is followed by can be trusted, so the client gets a 502, not either."""
    reply = _post(gateway, "chat", _ask("smuggling-model", "chat", "answer me"), "smuggling")
    assert reply.status_code == 502
    assert "sent more than the response it announced" in reply.json()["error"]["message"]
    record = _record(gateway, "smuggling")
    assert record["status"] == 502 and record["error"].startswith("protocol")
