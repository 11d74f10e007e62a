"""OpenTelemetry (issue 17): a real gateway exports its spans over OTLP/HTTP to a receiver in
this process that decodes the protobuf; the official SDKs send a W3C traceparent; a
recording upstream shows what the gateway sent on. Traced: the client's trace goes on
through the gateway's spans (server > admission, upstream call, audit append) to the
upstream, whose parent is the upstream call's span. Untraced: nothing is exported, and the
client's traceparent reaches the upstream unchanged.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys

import anthropic
import openai
import pytest

from support.gateway import KEYS, POLICY_V2, ROUTING, Gateway
from support.otlp import OtlpReceiver, Span
from support.recording_upstream import RecordingUpstream

TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
ROUTES = """\
routes:
  - {match: "rec-gpt*", provider: rec}
  - {match: "rec-claude*", provider: rec-anthropic}
  - {match: "recfail-*", provider: dead, fallbacks: [{provider: rec, model: rec-gpt}]}
"""
PROVIDER_SECRET = "rec-provider-secret"
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")  # flags: sampled, random (level 2)


def traceparent() -> tuple[str, str, str]:
    """(header, trace id, the client's span id)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def extra_toml(rec: RecordingUpstream, receiver: OtlpReceiver | None) -> str:
    toml = f"""
[providers.rec]
kind = "openai"
base_url = "{rec.url}/v1"
api_key = "{PROVIDER_SECRET}"
[providers.rec-anthropic]
kind = "anthropic"
base_url = "{rec.url}"
api_key = "{PROVIDER_SECRET}"
"""
    if receiver is not None:
        toml += f'[tracing]\nendpoint = "{receiver.url}"\nservice_name = "gatewayd-test"\n'
    return toml


def start(root, mock_port, fragile_port, rec, receiver, interface="asgi") -> Gateway:
    gw = Gateway(root, mock_port, fragile_port, interface=interface, extra_providers=extra_toml(rec, receiver))
    (root / "routing.yaml").write_text(ROUTING.replace("routes:\n", ROUTES))
    return gw.start()


@pytest.fixture(scope="module")
def otel_env():
    """Exports every 100 ms (the SDK's default is 5 s); no endpoint from the environment."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"):
            mp.delenv(name, raising=False)
        yield


@pytest.fixture(scope="module")
def rec():
    upstream = RecordingUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def receiver():
    r = OtlpReceiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="module", params=["asgi", "rsgi"])
def traced(request, otel_env, tmp_path_factory, mock_port, fragile_port, rec, receiver):
    """A traced gateway serving policy v2 (pushed and activated here), routing v1, config v1."""
    root = tmp_path_factory.mktemp("traced")
    gw = start(root, mock_port, fragile_port, rec, receiver, request.param)
    (root / "policy-v2.yaml").write_text(POLICY_V2)
    gw.cli("push", "policy", str(root / "policy-v2.yaml"), "--reason", "tracing test")
    gw.cli("activate", "policy", "2", "--reason", "tracing test")
    yield gw
    gw.stop()


def openai_client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=KEYS["acme"], max_retries=0)


def chat(gw: Gateway, model: str, prompt: str, headers: dict, **kwargs):
    return openai_client(gw).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}], extra_headers=headers, **kwargs
    )


def by_name(spans: list[Span]) -> dict[str, list[Span]]:
    out: dict[str, list[Span]] = {}
    for s in spans:
        out.setdefault(s.name, []).append(s)
    return out


def sent_upstream(rec: RecordingUpstream, count: int) -> list[dict[str, str]]:
    return [headers for _, headers in rec.seen[count:]]


def assert_nothing_said(spans: list[Span], *said: str) -> None:
    """No prompt, answer or key in any attribute."""
    for s in spans:
        for value in (*s.attributes.values(), *s.resource.values()):
            for text in (*said, PROVIDER_SECRET, KEYS["acme"]):
                assert text not in str(value), f"{s.name} carries {text!r}"


def test_a_request_continues_the_clients_trace_to_the_upstream(traced, rec, receiver):
    header, trace_id, client_span = traceparent()
    before = len(rec.seen)
    prompt = f"a traced question {secrets.token_hex(4)}"
    raw = chat(traced, "rec-gpt", prompt, {"traceparent": header, "tracestate": TRACESTATE}, temperature=0)
    assert raw.http_response.status_code == 200 and raw.parse().choices[0].message.content == "hi"
    spans = receiver.trace(trace_id, 4)
    named = by_name(spans)
    server = named["POST /v1/chat/completions"][0]
    (admit,), (call,), (append,) = named["gatewayd.admit"], named["chat rec-gpt"], named["gatewayd.audit.append"]
    assert len(spans) == 4
    assert server.kind == "server" and server.parent_id == client_span
    assert {admit.parent_id, call.parent_id, append.parent_id} == {server.span_id}
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.response.status_code"] == 200
    versions = {f"gatewayd.{d}.version": int(raw.headers[f"x-gatewayd-{d}-version"]) for d in DOMAINS}
    assert versions == {"gatewayd.policy.version": 2, "gatewayd.routing.version": 1, "gatewayd.config.version": 1}
    assert {k: admit.attributes[k] for k in versions} == versions
    assert admit.attributes["gatewayd.verdict"] == "allow" and admit.attributes["gatewayd.cache"] == "miss"
    assert admit.attributes["gen_ai.request.model"] == "rec-gpt" and admit.attributes["gatewayd.tenant"] == "acme"
    assert call.kind == "client" and call.attributes["gen_ai.system"] == "openai"
    assert call.attributes["gatewayd.provider"] == "rec" and call.attributes["http.response.status_code"] == 200
    assert admit.end_ns <= call.start_ns and call.end_ns <= append.start_ns <= append.end_ns <= server.end_ns
    record = next(r for r in traced.audit_records() if r.get("request_id") == raw.headers["x-request-id"])
    assert append.attributes["gatewayd.audit.seq"] == record["seq"]
    assert server.resource["service.name"] == "gatewayd-test"
    # The upstream's parent is the gateway's upstream call, in the client's trace and state.
    (upstream,) = sent_upstream(rec, before)
    assert upstream["traceparent"] == f"00-{trace_id}-{call.span_id}-01"
    assert upstream["tracestate"] == TRACESTATE
    assert_nothing_said(spans, prompt, "hi")


DOMAINS = ("policy", "routing", "config")


def test_a_cache_hit_has_no_upstream_span(traced, rec, receiver):
    prompt = f"cache me {secrets.token_hex(4)}"
    chat(traced, "rec-gpt", prompt, {}, temperature=0)  # fills the cache
    before = len(rec.seen)
    header, trace_id, _ = traceparent()
    assert chat(traced, "rec-gpt", prompt, {"traceparent": header}, temperature=0).http_response.status_code == 200
    spans = receiver.trace(trace_id, 3)
    receiver.trace(trace_id, 4, timeout=0.5)  # a fourth would have arrived in the same export
    assert sorted(s.name for s in spans) == ["POST /v1/chat/completions", "gatewayd.admit", "gatewayd.audit.append"]
    assert by_name(spans)["gatewayd.admit"][0].attributes["gatewayd.cache"] == "hit"
    assert len(rec.seen) == before


def test_a_streamed_answers_upstream_span_lasts_until_the_stream_ends(traced, rec, receiver):
    header, trace_id, _ = traceparent()
    stream = openai_client(traced).chat.completions.create(
        model="rec-gpt",
        messages=[{"role": "user", "content": "stream"}],
        stream=True,
        extra_headers={"traceparent": header},
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "hi"
    named = by_name(receiver.trace(trace_id, 4))
    (call,), (append,) = named["chat rec-gpt"], named["gatewayd.audit.append"]
    assert call.attributes["gatewayd.stream"] is True
    assert call.end_ns - call.start_ns >= 0.9e9  # three pauses of 0.3 s between the upstream's events
    assert call.end_ns <= append.start_ns


def test_an_anthropic_request_is_traced_too(traced, rec, receiver):
    header, trace_id, client_span = traceparent()
    before = len(rec.seen)
    client = anthropic.Anthropic(base_url=traced.url, api_key=KEYS["acme"], max_retries=0)
    message = client.messages.create(
        model="rec-claude",
        max_tokens=16,
        messages=[{"role": "user", "content": "hello"}],
        extra_headers={"traceparent": header},
    )
    assert message.content[0].text == "hi"
    named = by_name(receiver.trace(trace_id, 4))
    assert named["POST /v1/messages"][0].parent_id == client_span
    (call,) = named["chat rec-claude"]
    assert call.attributes["gen_ai.system"] == "anthropic" and call.attributes["gatewayd.provider"] == "rec-anthropic"
    assert sent_upstream(rec, before)[0]["traceparent"] == f"00-{trace_id}-{call.span_id}-01"


def test_each_upstream_tried_has_its_span(traced, rec, receiver):
    """A provider that cannot be reached, then its fallback: the upstream's parent is the
    span of the call that reached it."""
    header, trace_id, _ = traceparent()
    before = len(rec.seen)
    assert chat(traced, "recfail-1", "fail over", {"traceparent": header}).http_response.status_code == 200
    spans = receiver.trace(trace_id, 5)
    failed, answered = [s for s in spans if s.kind == "client"]
    assert failed.attributes["gatewayd.provider"] == "dead" and failed.attributes["error.type"] == "unreachable"
    assert failed.status == 2 and failed.attributes["gatewayd.failovers"] == 0
    assert answered.attributes["gatewayd.provider"] == "rec" and answered.attributes["gatewayd.failovers"] == 1
    assert answered.attributes["gen_ai.request.model"] == "rec-gpt"
    assert by_name(spans)["POST /v1/chat/completions"][0].attributes["gatewayd.failovers"] == 1
    assert sent_upstream(rec, before)[0]["traceparent"] == f"00-{trace_id}-{answered.span_id}-01"


@pytest.mark.parametrize("bad", ["00-not-a-trace-01", "00-" + "0" * 32 + "-" + "1" * 16 + "-01", "garbage"])
def test_a_malformed_traceparent_starts_a_new_trace(traced, rec, receiver, bad):
    before = len(rec.seen)
    assert chat(traced, "rec-gpt", "malformed", {"traceparent": bad}).http_response.status_code == 200
    sent = TRACEPARENT.match(sent_upstream(rec, before)[0]["traceparent"])
    assert sent is not None
    spans = receiver.trace(sent[1], 4)
    assert by_name(spans)["POST /v1/chat/completions"][0].parent_id == ""
    assert by_name(spans)["chat rec-gpt"][0].span_id == sent[2]


def test_untraced_the_traceparent_passes_through_unchanged(otel_env, tmp_path, mock_port, fragile_port, rec):
    receiver = OtlpReceiver().start()  # where nothing must arrive
    gw = start(tmp_path, mock_port, fragile_port, rec, None)
    try:
        header, _, _ = traceparent()
        before = len(rec.seen)
        assert chat(gw, "rec-gpt", "untraced", {"traceparent": header, "tracestate": TRACESTATE}).http_response
        (upstream,) = sent_upstream(rec, before)
        assert upstream["traceparent"] == header and upstream["tracestate"] == TRACESTATE
        assert chat(gw, "rec-gpt", "no context", {}).http_response.status_code == 200
        assert "traceparent" not in sent_upstream(rec, before)[1]
    finally:
        gw.stop()  # a traced gateway would export what it still holds now
        receiver.stop()
    assert receiver.exports == 0


SDK_MISSING = """
import sys
sys.modules["opentelemetry.sdk.trace"] = None  # as if gatewayd[otel] were not installed
from gatewayd.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_tracing_configured_without_the_sdk_is_a_one_line_error(tmp_path, mock_port, fragile_port, rec):
    gw = Gateway(tmp_path, mock_port, fragile_port, extra_providers='[tracing]\nendpoint = "http://127.0.0.1:4318"\n')
    done = subprocess.run(
        [sys.executable, "-c", SDK_MISSING, "--config", str(gw.config), "serve"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr == (
        f"error: {gw.config}: tracing.endpoint: tracing is configured but the OpenTelemetry SDK is not "
        "installed (pip install 'gatewayd[otel]')\n"
    )
