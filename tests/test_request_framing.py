"""Request framing and routing against a real `gatewayd serve`, over raw sockets: what a
hostile client writes on the wire is refused in the API's error shape, or recorded for
what it was."""

from __future__ import annotations

import json
import socket
import time

import pytest

from gatewayd.server.pipeline import STOPPED_UPSTREAM
from support.gateway import KEYS
from support.raw_http import read_until_closed, status_and_body
from support.views import journal


@pytest.fixture(scope="module")
def gateway(gateway_each_interface):
    """This suite runs against ASGI and RSGI alike (`[server] interface`)."""
    return gateway_each_interface


CHAT = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hello"}]}).encode()


def exchange(gateway, raw: bytes, half_close: bool = False) -> bytes:
    """Sends `raw` on a new connection and returns all the server sent until it closed."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.sendall(raw)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = read_until_closed(sock, 30)
        assert received is not None, "the server never closed the connection"
        return received


def head(method: str, path: str, *lines: str) -> bytes:
    fields = [f"{method} {path} HTTP/1.1", "Host: gw", f"Authorization: Bearer {KEYS['acme']}", *lines]
    return ("\r\n".join([*fields, "Connection: close"]) + "\r\n\r\n").encode()


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


@pytest.mark.parametrize(
    "codings",
    [["chunked, chunked"], ["chunked", "chunked"], ["chunked,chunked"]],
    ids=["one-field", "two-fields", "no-space"],
)
def test_chunked_applied_twice_is_refused_400(gateway, codings):
    lines = [f"Transfer-Encoding: {value}" for value in codings]
    status, body = status_and_body(exchange(gateway, head("POST", "/v1/chat/completions", *lines) + chunked(CHAT)))
    assert status == 400
    assert body["error"]["code"] == "invalid_transfer_encoding" and "chunked" in body["error"]["message"]


def test_chunked_twice_on_messages_is_refused_in_the_anthropic_shape(gateway):
    claude = json.dumps({"model": "mock-claude", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})
    raw = head("POST", "/v1/messages", "Transfer-Encoding: chunked, chunked") + chunked(claude.encode())
    status, body = status_and_body(exchange(gateway, raw))
    assert status == 400 and body["type"] == "error" and "chunked" in body["error"]["message"]


def test_only_a_single_chunked_coding_is_decoded(gateway):
    """One `chunked` is served; a coding the gateway cannot decode is a 501 (RFC 9112)."""
    raw = head("POST", "/v1/chat/completions", "Transfer-Encoding: chunked") + chunked(CHAT)
    status, body = status_and_body(exchange(gateway, raw))
    assert status == 200 and "hello" in body["choices"][0]["message"]["content"]
    raw = head("POST", "/v1/chat/completions", "Transfer-Encoding: gzip, chunked") + chunked(CHAT)
    status, body = status_and_body(exchange(gateway, raw))
    assert status == 501 and "gzip" in body["error"]["message"]


# ASGI only: RSGI's scope carries the path already percent-decoded (granian has no raw
# path there), so under `interface = "rsgi"` an encoded spelling is served as its route;
# the README says so where it offers RSGI.
@pytest.mark.parametrize("gateway_each_interface", ["asgi"], indirect=True)
@pytest.mark.parametrize(
    ("method", "plain", "encoded"),
    [
        ("POST", "/v1/chat/completions", "/v1/chat%2fcompletions"),
        ("POST", "/v1/chat/completions", "/v1/chat%2Fcompletions"),
        ("POST", "/v1/completions", "/v1/completion%73"),
        ("GET", "/metrics", "/%6detrics"),
        ("GET", "/v1/models", "/v1/%6dodels"),
        ("GET", "/healthz", "/%68ealthz"),
    ],
)
def test_percent_encoded_paths_name_no_route(gateway, method, plain, encoded):
    """Routing is on the path as sent: only the plain spelling reaches the endpoint."""
    completion = json.dumps({"model": "mock-gpt", "prompt": "hello"}).encode()
    body = (completion if "/v1/completion" in plain else CHAT) if method == "POST" else b""
    lines = [f"Content-Length: {len(body)}"] if body else []
    assert exchange(gateway, head(method, plain, *lines) + body).startswith(b"HTTP/1.1 200")
    status, answer = status_and_body(exchange(gateway, head(method, encoded, *lines) + body))
    assert status == 404 and answer["error"]["code"] == "not_found"


def test_a_client_that_half_closes_is_recorded_as_gone_not_as_answered(gateway, mock_port):
    """granian closes the connection on the client's FIN, so nothing can be answered; the
    audit record says so (499), whether the FIN was seen while the body was read or while
    the provider was asked (which stops the request there), instead of claiming an answer
    was given: the slow provider would have timed out (504) 1.5 s later.

    granian sometimes drops the request before the app is called at all (the FIN came with
    it): then neither the provider nor the audit trail ever sees it, and the attempt is
    made again. A request the provider saw is always recorded."""
    recorded = []
    for attempt in range(5):
        request_id, prompt = f"half-closed-{attempt}", f"half-closed prompt {attempt}"
        body = json.dumps({"model": "slow-model", "messages": [{"role": "user", "content": prompt}]}).encode()
        raw = head("POST", "/v1/chat/completions", f"Content-Length: {len(body)}", f"X-Request-Id: {request_id}")
        assert exchange(gateway, raw + body, half_close=True) == b""
        deadline = time.monotonic() + 10  # the request goes on upstream after the client left
        while not (records := [r for r in gateway.audit_records() if r.get("request_id") == request_id]):
            if time.monotonic() > deadline:
                seen_upstream = any(prompt in json.dumps(dict(entry)["body"]) for entry in journal(mock_port))
                assert not seen_upstream, f"{request_id} reached the provider but was never recorded"
                break
            time.sleep(0.5)
        recorded += records
        if records:
            break
    assert len(recorded) == 1, "no attempt reached the gateway's app"
    assert recorded[0]["status"] == 499
    assert recorded[0]["error"] in ("client closed the connection before its body was read", STOPPED_UPSTREAM)


def test_a_client_that_hangs_up_while_the_provider_works_stops_the_request(gateway):
    """The body is read by its Content-Length, so the server's end-of-body message is still
    unread when the watch on the client starts: it must pass over it and wait for the hang
    up. The client sends a whole request, waits, then closes (no half-close): the request
    upstream is stopped there, and the record says so (499), not the timeout (504) the
    slow provider would have caused 1.5 s later."""
    request_id = "hung-up-while-waiting"
    body = json.dumps({"model": "slow-model", "messages": [{"role": "user", "content": "wait for me"}]}).encode()
    raw = head("POST", "/v1/chat/completions", f"Content-Length: {len(body)}", f"X-Request-Id: {request_id}")
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.sendall(raw + body)
        time.sleep(0.4)  # the request is upstream by now
    deadline = time.monotonic() + 10
    while not (records := [r for r in gateway.audit_records() if r.get("request_id") == request_id]):
        assert time.monotonic() < deadline, "the request was never recorded"
        time.sleep(0.2)
    assert records[0]["status"] == 499
    assert records[0]["error"] == STOPPED_UPSTREAM and records[0]["upstream"] == "slow", records[0]
