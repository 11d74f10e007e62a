"""A replica that has no state to serve under yet (an empty store, no [bootstrap], no
last-known-good) answers 503 `not_ready` in the API's error shape, and /readyz says it is
not ready: never a 500."""

from __future__ import annotations

import json

import httpx

from support.gateway import KEYS, Gateway
from support.procs import start_process, stop_process


def test_a_replica_with_nothing_applied_answers_503_not_ready(tmp_path, mock_port, fragile_port):
    gw = Gateway(tmp_path, mock_port, fragile_port)
    gw.config.write_text(gw.config.read_text().split("[bootstrap]")[0])  # nothing to bootstrap
    proc = start_process(gw.cli_argv("serve"), gw.url + "/healthz", timeout=60)
    try:
        ready = httpx.get(gw.url + "/readyz", timeout=5)
        assert ready.status_code == 503 and ready.json()["ready"] is False
        auth = {"authorization": f"Bearer {KEYS['acme']}"}
        chat = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
        answer = httpx.post(gw.url + "/v1/chat/completions", json=chat, headers=auth, timeout=5)
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "not_ready", answer.text
        claude = httpx.post(
            gw.url + "/v1/messages", content=json.dumps({**chat, "max_tokens": 8}), headers=auth, timeout=5
        )
        assert claude.status_code == 503 and claude.json()["type"] == "error", claude.text
        models = httpx.get(gw.url + "/v1/models", headers=auth, timeout=5)
        assert models.status_code == 503 and models.json()["error"]["code"] == "not_ready"
    finally:
        stop_process(proc)
