"""Hostile clients against a real `gatewayd serve` whose open-file limit is lowered to 300:
connections that send nothing, stop mid-body or dribble their body are closed or answered
408, while real requests keep being served, the metrics file written and every request
audited."""

from __future__ import annotations

import json
import os
import socket
import time

import httpx
import pytest

from support.gateway import KEYS, Gateway
from support.raw_http import read_until_closed, status_and_body

FILE_LIMIT = 300
LIMITS = {"HEADER_TIMEOUT_S": 1, "BODY_IDLE_TIMEOUT_S": 1, "BODY_TIMEOUT_S": 3}
CHAT = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hello"}]}).encode()
PATIENCE_S = 30  # generous: the timeouts above are 1 to 3 s, the machine is shared


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, mock_port, fragile_port):
    env = ["env", *(f"GATEWAYD_SERVER_{name}={value}" for name, value in LIMITS.items())]
    lowered = ["prlimit", f"--nofile={FILE_LIMIT}:{FILE_LIMIT}"]
    gw = Gateway(tmp_path_factory.mktemp("limits"), mock_port, fragile_port).start([*env, *lowered])
    yield gw
    gw.stop()


def connect(gw: Gateway) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gw.port), timeout=PATIENCE_S)


def request_head(path: str, length: int, request_id: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {KEYS['acme']}\r\n"
    head += "Content-Type: application/json\r\n"
    if request_id:
        head += f"X-Request-Id: {request_id}\r\n"
    return (head + f"Content-Length: {length}\r\n\r\n").encode()


def server_log(gw: Gateway) -> str:
    """The gateway's output so far (read without moving the file offset it writes at)."""
    fd = gw.proc.log.fileno()
    return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")


def audited_statuses(gw: Gateway) -> dict[str, int]:
    return {r["request_id"]: r["status"] for r in gw.audit_records() if r.get("kind") == "request"}


def test_a_connection_that_sends_nothing_is_closed(guarded):
    with connect(guarded) as sock:
        assert read_until_closed(sock, PATIENCE_S) == b""


def test_an_idle_kept_alive_connection_is_closed_after_its_answer(guarded):
    with connect(guarded) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200") and b"connection: close" not in answer.lower()
        assert read_until_closed(sock, timeout=15) == b""


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_body_that_stalls_is_answered_408_in_the_api_shape_and_audited(guarded, path):
    request_id = f"stalled-{path.rsplit('/', 1)[1]}"
    with connect(guarded) as sock:
        sock.sendall(request_head(path, len(CHAT), request_id) + CHAT[:10])
        response = read_until_closed(sock, PATIENCE_S)
    assert response is not None, "the stalled request was never answered"
    status, body = status_and_body(response)
    assert status == 408
    if path == "/v1/messages":
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    else:
        assert body["error"]["code"] == "request_timeout" and body["error"]["type"] == "invalid_request_error"
    assert audited_statuses(guarded)[request_id] == 408


def test_a_body_dribbled_past_the_whole_body_deadline_is_answered_408(guarded):
    """A byte every 0.25 s never trips the 1 s idle timeout; the 3 s whole-body one ends it."""
    body = b" " * 200 + CHAT  # 50 s of dribbling, if nothing stopped it
    response = None
    with connect(guarded) as sock:
        sock.sendall(request_head("/v1/chat/completions", len(body)))
        sock.settimeout(0.25)
        deadline = time.monotonic() + PATIENCE_S
        for byte in body:
            if time.monotonic() > deadline:
                break
            try:
                sock.sendall(bytes([byte]))
                response = sock.recv(65536)
                break  # the server answered before the body was complete
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        response = (response or b"") + (read_until_closed(sock, PATIENCE_S) or b"")
    assert response.startswith(b"HTTP/1.1 408"), response[:200]


def test_hundreds_of_silent_and_stalled_connections_do_not_stop_service(guarded):
    """700 silent and 50 stalled connections against a worker allowed 300 files. Its cap
    (fitted to that limit) keeps the excess in the listen backlog, the timeouts free the
    slots, and real requests, the metrics file and the audit trail keep working."""
    silent = []
    for _ in range(700):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", guarded.port))
        silent.append(sock)
    stalled = [connect(guarded) for _ in range(50)]
    for sock in stalled:
        sock.sendall(request_head("/v1/chat/completions", len(CHAT)) + CHAT[:5])
    try:
        headers = {"authorization": f"Bearer {KEYS['acme']}", "content-type": "application/json"}
        ids = [f"served-under-flood-{i}" for i in range(5)]
        for request_id in ids:
            r = httpx.post(
                guarded.url + "/v1/chat/completions",
                content=CHAT,
                headers={**headers, "x-request-id": request_id},
                timeout=120,
            )
            assert r.status_code == 200, r.text
        assert httpx.get(guarded.url + "/metrics", timeout=120).status_code == 200  # writes the metrics file

        for sock in silent:
            sock.setblocking(True)
            assert read_until_closed(sock, timeout=120) == b""
        for sock in stalled:
            response = read_until_closed(sock, timeout=120)
            assert response is not None and status_and_body(response)[0] == 408
    finally:
        for sock in silent + stalled:
            sock.close()
    audited = audited_statuses(guarded)
    assert all(audited[request_id] == 200 for request_id in ids)
    log = server_log(guarded)
    assert "client connection cap reached" in log
    assert "Too many open files" not in log and "could not write metrics" not in log
