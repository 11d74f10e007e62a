"""Connect retries: a provider that refuses connections (restarting, not yet listening) is
tried again after an exponential backoff, and the request succeeds once it listens; with
no retries configured the caller gets the 502 at once."""

from __future__ import annotations

import json
import socket
import threading
import time
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx
import pytest

from support.gateway import KEYS, Gateway

COMPLETION = {
    "id": "chatcmpl-late",
    "object": "chat.completion",
    "created": 0,
    "model": "dead-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "back up"}, "finish_reason": "stop"}],
}


class Provider(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        body = json.dumps(COMPLETION).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def gw(tmp_path, mock_port, fragile_port):
    gateway = Gateway(tmp_path, mock_port, fragile_port).start()
    yield gateway
    gateway.stop()


def dead_port(gw: Gateway) -> int:
    """The port of the `dead` provider: nothing listens there until a test starts to."""
    config = tomllib.loads(gw.config.read_text())
    return urlsplit(config["providers"]["dead"]["base_url"]).port


def activate(gw: Gateway, tmp_path, text: str) -> None:
    doc = tmp_path / "retries.yaml"
    doc.write_text(text)
    version = gw.cli("push", "config", str(doc), "--reason", "retries").stdout.split(" version ")[1].split()[0]
    gw.cli("activate", "config", version, "--reason", "retries")


def chat(gw: Gateway) -> httpx.Response:
    body = {"model": "dead-model", "messages": [{"role": "user", "content": "are you there?"}]}
    return httpx.post(
        gw.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEYS['acme']}"}, timeout=30
    )


def test_a_refused_connection_is_retried_with_backoff_until_the_provider_listens(gw, tmp_path):
    activate(gw, tmp_path, "upstream_timeout_s: 5\nretries: 5\nretry_backoff_ms: 100\n")
    port = dead_port(gw)
    server = ThreadingHTTPServer(("127.0.0.1", port), Provider, bind_and_activate=False)
    server.allow_reuse_address = True

    def listen_later():  # attempts go at about 0, 0.1, 0.3, 0.7, 1.5 and 3.1 s
        time.sleep(0.25)
        server.server_bind()
        server.server_activate()
        server.serve_forever()

    threading.Thread(target=listen_later, daemon=True).start()
    try:
        started = time.monotonic()
        response = chat(gw)
        elapsed = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "back up"
    assert elapsed >= 0.25  # it waited for the provider rather than failing at once


def test_without_retries_a_refused_connection_is_a_502_at_once(gw, tmp_path):
    activate(gw, tmp_path, "upstream_timeout_s: 5\nretries: 0\n")
    with socket.socket() as probe:  # nothing listens: the refusal is immediate
        assert probe.connect_ex(("127.0.0.1", dead_port(gw))) != 0
    response = chat(gw)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unreachable"
