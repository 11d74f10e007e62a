"""Streams in flight when their versions are reverted (docs/ROLLBACK.md R6).

Long streams (the `fragile` providers: 50 pieces 300 ms apart, about 16 s) run through a
real two-replica gateway, one through the official `openai` SDK on chat completions and
one as raw SSE on Anthropic's `/v1/messages`, while the version set they were admitted
under is rolled back. By default (`inflight_on_revert: finish`) they are relayed to their
end and their records say `finished-after-revert`; under a config that says `cut` they end
with the API's error event at their next piece after the rollback's barrier, and their
records say `cut-on-revert`. The config a stream was admitted under decides, not the one
that replaced it, and a change that keeps a stream's versions served leaves it alone."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest
from conftest import start_provider_mock

from support.gateway import KEYS, POLICY_V2, ROUTING, RUNTIME, Gateway
from support.procs import stop_process

PROMPT = "tell me the long story of the gateway that rolled back while it was talking, " * 2
WHOLE = "echo: " + PROMPT  # what the mock answers, in 50 pieces
CUT = RUNTIME + "inflight_on_revert: cut\n"
REPLICAS = 2


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock_port, fragile_port):
    _, fragile = start_provider_mock(fragile_port)
    g = Gateway(tmp_path_factory.mktemp("inflight"), mock_port, fragile_port, workers=REPLICAS).start()
    yield g
    g.stop()
    stop_process(fragile)


def push(gw: Gateway, domain: str, text: str, name: str) -> int:
    path = gw.root / name
    path.write_text(text)
    out = gw.cli("push", domain, str(path), "--reason", f"push {name}").stdout
    return int(out.split(" version ")[1].split()[0])


def shift(gw: Gateway, *args: str) -> int:
    """A change through the barrier; returns its id (the last in the domain's history)."""
    done = gw.cli(*args, "--reason", f"test: {' '.join(args)}")
    assert any(line.startswith(f"in effect: {REPLICAS}/{REPLICAS} replicas") for line in done.stdout.splitlines())
    return int(gw.cli("history", args[1]).stdout.splitlines()[-1].split()[0])


class Stream(threading.Thread):
    """One long stream, read in a thread: `started` is set once a piece of text came."""

    def __init__(self, gw: Gateway, api: str, request_id: str) -> None:
        super().__init__(daemon=True)
        self.gw, self.api, self.request_id = gw, api, request_id
        self.started = threading.Event()
        self.texts: list[str] = []
        self.events: list[str] = []  # Anthropic's event names, in order
        self.error_event: dict | None = None  # Anthropic's `event: error` data
        self.finish_reason: str | None = None  # OpenAI's last chunk's
        self.error: BaseException | None = None  # what the SDK raised
        self.headers: httpx.Headers | None = None
        self.began = time.monotonic()
        self.ended = 0.0

    def run(self) -> None:
        try:
            self._openai() if self.api == "chat" else self._anthropic()
        except BaseException as exc:  # noqa: BLE001 - what the client saw is what is asserted
            self.error = exc
        finally:
            self.ended = time.monotonic()
            self.started.set()

    def _openai(self) -> None:
        client = openai.OpenAI(base_url=self.gw.url + "/v1", api_key=KEYS["acme"], max_retries=0, timeout=60)
        raw = client.chat.completions.with_raw_response.create(
            model="fragile-model",
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            extra_headers={"x-request-id": self.request_id},
        )
        self.headers = raw.headers
        for chunk in raw.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                self.texts.append(chunk.choices[0].delta.content)
                self.started.set()
            if chunk.choices and chunk.choices[0].finish_reason:
                self.finish_reason = chunk.choices[0].finish_reason

    def _anthropic(self) -> None:
        body = {"model": "fragile-model", "max_tokens": 256, "messages": [{"role": "user", "content": PROMPT}]}
        headers = {"x-api-key": KEYS["acme"], "anthropic-version": "2023-06-01", "x-request-id": self.request_id}
        with httpx.stream(
            "POST", self.gw.url + "/v1/messages", json={**body, "stream": True}, headers=headers, timeout=60
        ) as r:
            assert r.status_code == 200, r.read()
            self.headers = r.headers
            event = ""
            for line in r.iter_lines():
                if line.startswith("event:"):
                    event = line[len("event:") :].strip()
                    self.events.append(event)
                elif line.startswith("data:"):
                    data = json.loads(line[len("data:") :])
                    if event == "content_block_delta":
                        self.texts.append(data["delta"]["text"])
                        self.started.set()
                    elif event == "error":
                        self.error_event = data


def start_streams(gw: Gateway, name: str) -> list[Stream]:
    """An OpenAI and an Anthropic stream, both relaying by the time this returns."""
    streams = [Stream(gw, api, f"{name}-{api}") for api in ("chat", "messages")]
    for s in streams:
        s.start()
    for s in streams:
        assert s.started.wait(15) and s.error is None and s.texts, f"{s.api}: the stream never started: {s.error!r}"
    return streams


def records(gw: Gateway, streams: list[Stream]) -> dict[str, dict]:
    """Each stream's audit record, by API."""
    wanted = {s.request_id: s.api for s in streams}
    found = {wanted[r["request_id"]]: r for r in gw.audit_records() if r.get("request_id") in wanted}
    assert len(found) == len(streams), found
    return found


def test_by_default_a_stream_whose_versions_are_rolled_back_finishes_and_says_so(gw):
    """Routing v(n) is activated, two streams start under it, and it is rolled back: they
    go on to their last event. A config saying `cut` activated next changes nothing for
    them: they were admitted under `finish`."""
    routing = push(gw, "routing", ROUTING, "routing-next.yaml")
    shift(gw, "activate", "routing", str(routing))
    streams = start_streams(gw, "finish")
    rollback = shift(gw, "rollback", "routing")
    cut = push(gw, "config", CUT, "cut-after.yaml")
    shift(gw, "activate", "config", str(cut))
    for s in streams:
        s.join(40)
        assert not s.is_alive()
    try:
        chat, messages = streams
        assert chat.error is None and chat.finish_reason == "stop", repr(chat.error)
        assert messages.error is None and messages.error_event is None
        assert messages.events[-1] == "message_stop"
        for s in streams:
            assert "".join(s.texts) == WHOLE, f"{s.api}: not the whole answer"
            assert s.headers is not None and s.headers["x-gatewayd-routing-version"] == str(routing)
        for api, record in records(gw, streams).items():
            assert record["routing_version"] == routing and record["config_version"] == 1, api
            assert (record["status"], record["error"]) == (200, None), record
            assert (record["inflight"], record["reverted_by"]) == ("finished-after-revert", rollback), record
    finally:
        shift(gw, "rollback", "config")


def test_a_stream_admitted_under_cut_ends_with_an_error_event_soon_after_the_barrier(gw):
    """Config v(n) says `cut`; two streams start under it; the config is rolled back (to
    v1, which says `finish`: the streams' own config decides). Each ends with its API's
    error event within a piece or two of the barrier, long before it would have ended."""
    cut = push(gw, "config", CUT, "cut.yaml")
    shift(gw, "activate", "config", str(cut))
    streams = start_streams(gw, "cut")
    rollback = shift(gw, "rollback", "config")
    barrier = time.monotonic()
    for s in streams:
        s.join(15)
        assert not s.is_alive()
    chat, messages = streams
    for s in streams:
        assert 0 < len("".join(s.texts)) < len(WHOLE), f"{s.api}: {len(s.texts)} pieces"
        assert s.ended - barrier < 3.0, f"{s.api}: ended {s.ended - barrier:.1f} s after the barrier"
        assert s.ended - s.began < 10.0  # a whole stream takes 16 s
    assert isinstance(chat.error, openai.APIError), repr(chat.error)
    assert f"left service at change {rollback}" in str(chat.error)
    assert chat.finish_reason is None
    assert messages.error is None and messages.events[-1] == "error" and "message_stop" not in messages.events
    assert messages.error_event is not None and messages.error_event["type"] == "error"
    assert messages.error_event["error"]["type"] == "api_error"
    assert "inflight_on_revert: cut" in messages.error_event["error"]["message"]
    for api, record in records(gw, streams).items():
        assert record["config_version"] == cut, api
        assert record["status"] == 200, record  # the head had been sent
        assert record["error"].startswith("cut on revert: ") and f"config v{cut}" in record["error"], record
        assert (record["inflight"], record["reverted_by"]) == ("cut-on-revert", rollback), record


def test_changes_that_keep_a_streams_versions_served_leave_it_alone(gw):
    """Under a config that says `cut`, three changes that each make the replicas swap but
    keep the streams' version set served: a policy for another tenant, a config for
    another route, and a routing canary beside the current version. The streams end whole,
    and their records say nothing of a revert."""
    cut = push(gw, "config", CUT, "cut-untouched.yaml")
    shift(gw, "activate", "config", str(cut))
    policy = push(gw, "policy", POLICY_V2, "policy-free.yaml")
    other_config = push(gw, "config", RUNTIME, "config-embeddings.yaml")
    candidate = push(gw, "routing", ROUTING, "routing-candidate.yaml")
    streams = start_streams(gw, "untouched")
    try:
        shift(gw, "activate", "policy", str(policy), "--scope", "tenant:free")
        shift(gw, "activate", "config", str(other_config), "--scope", "route:embeddings")
        shift(gw, "canary", "routing", str(candidate), "--percent", "10")
        for s in streams:
            s.join(40)
            assert not s.is_alive()
        chat, messages = streams
        assert chat.error is None and chat.finish_reason == "stop", repr(chat.error)
        assert messages.events[-1] == "message_stop" and messages.error_event is None
        for s in streams:
            assert "".join(s.texts) == WHOLE, f"{s.api}: not the whole answer"
        for record in records(gw, streams).values():
            assert (record["status"], record["error"], record["config_version"]) == (200, None, cut), record
            assert "inflight" not in record and "reverted_by" not in record, record
    finally:
        shift(gw, "rollback", "routing")
        shift(gw, "rollback", "config", "--scope", "route:embeddings")
        shift(gw, "rollback", "policy", "--scope", "tenant:free")
        shift(gw, "rollback", "config")


def test_a_bad_inflight_on_revert_is_refused_in_one_line_naming_the_field(gw):
    path = gw.root / "bad-inflight.yaml"
    path.write_text(RUNTIME + "inflight_on_revert: drain\n")
    done = gw.cli("push", "config", str(path), "--reason", "typo", check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "inflight_on_revert: must be one of finish, cut" in lines[0], done.stderr
