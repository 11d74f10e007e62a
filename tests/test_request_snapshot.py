"""One request, one snapshot (docs/ROLLBACK.md R6): a config flip while a request is in
flight changes nothing for it. The request below starts under config v1, whose rate limit
lets it through; while its body is still being sent, config v2 (a rate limit of one
request a minute, already spent, and audit fsync `always`) is activated on every replica.
The request is still served whole under v1: its response headers and its audit record
name config v1 (and date it from before the flip), and the next request is judged
under v2."""

from __future__ import annotations

import datetime as dt
import json
import socket
import time

from conftest import start_provider_mock

from support.gateway import KEYS, RUNTIME, Gateway
from support.procs import stop_process
from support.raw_http import read_until_closed, status_and_headers

BODY = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "in flight"}]}).encode()
STRICT = RUNTIME + "rate_limit: {requests_per_minute: 1, burst: 1}\n"


def _head(port: int) -> bytes:
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"authorization: Bearer {KEYS['acme']}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(BODY)}\r\nconnection: close\r\n\r\n"
    ).encode()


def _answer(sock: socket.socket) -> tuple[int, dict[str, str]]:
    response = read_until_closed(sock, 30)
    assert response is not None, "the gateway never closed the connection"
    return status_and_headers(response)


def test_a_config_flip_mid_request_leaves_the_request_on_its_snapshot(tmp_path, fragile_port):
    mock_url, mock = start_provider_mock()
    gw = Gateway(tmp_path, int(mock_url.rsplit(":", 1)[1]), fragile_port).start()
    try:
        sock = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
        sock.sendall(_head(gw.port) + BODY[:10])  # admitted past auth and the rate limit
        (tmp_path / "strict.yaml").write_text(STRICT.replace("fsync: interval", "fsync: always"))
        pushed = gw.cli("push", "config", str(tmp_path / "strict.yaml"), "--reason", "tighten").stdout
        activating = time.time()
        gw.cli("activate", "config", pushed.split(" version ")[1].split()[0], "--reason", "mid-request")
        sock.sendall(BODY[10:])
        status, headers = _answer(sock)
        sock.close()
        assert status == 200
        assert headers["x-gatewayd-config-version"] == "1"
        record = next(r for r in gw.audit_records() if r.get("request_id") == headers["x-request-id"])
        assert record["config_version"] == 1 and record["status"] == 200
        # Its record dates it from when it took its snapshot, before the flip: a drill
        # judging "started after its replica acknowledged" from the chain sees it right.
        ended = dt.datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).timestamp()
        assert ended - record["latency_us"] / 1e6 < activating
        # The next request is judged under v2: its one request a minute is spent by now.
        later = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
        later.sendall(_head(gw.port) + BODY)
        first, first_headers = _answer(later)
        again = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
        again.sendall(_head(gw.port) + BODY)
        second, second_headers = _answer(again)
        assert first_headers["x-gatewayd-config-version"] == "2"
        assert (first, second) == (200, 429)
    finally:
        gw.stop()
        stop_process(mock)
