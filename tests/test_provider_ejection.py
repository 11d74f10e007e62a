"""Passive provider health: a provider that keeps failing is ejected for a while, so its
requests go straight to the fallbacks instead of waiting out its timeout; when the time
is up it is tried again, and ejected again at once if it still fails."""

from __future__ import annotations

import time

import httpx
import pytest

from support.gateway import KEYS, Gateway


@pytest.fixture
def gw(tmp_path, mock_port, fragile_port):
    gateway = Gateway(tmp_path, mock_port, fragile_port).start()
    doc = tmp_path / "ejection.yaml"
    doc.write_text("upstream_timeout_s: 0.5\nejection: {after_failures: 2, for_s: 5.0}\n")
    version = gateway.cli("push", "config", str(doc), "--reason", "ejection").stdout.split(" version ")[1].split()[0]
    gateway.cli("activate", "config", version, "--reason", "ejection")
    yield gateway
    gateway.stop()


def ask(gw: Gateway, n: int) -> str:
    """Sends `hanging-model` request n (the `slow` provider takes 4 s, the timeout is
    0.5 s, the fallback answers); returns what failed before the answer, per the audit."""
    body = {"model": "hanging-model", "messages": [{"role": "user", "content": f"request {n}"}]}
    reply = httpx.post(
        gw.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEYS['acme']}"}, timeout=30
    )
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] == f"echo: request {n}"
    record = next(r for r in gw.audit_records() if r.get("request_id") == reply.headers["x-request-id"])
    assert record["upstream"] == "mock"
    return record["failovers"][0]


def test_a_failing_provider_is_ejected_then_tried_again(gw):
    assert ask(gw, 1).startswith("slow: timeout")
    assert ask(gw, 2).startswith("slow: timeout")  # the second failure in a row ejects it
    ejected = time.monotonic()  # just after: the 5 s window leaves a loaded machine time for the checks
    assert ask(gw, 3) == "slow: ejected"
    assert httpx.get(gw.url + "/readyz").json()["ejected_providers"] == ["slow"]
    time.sleep(max(0.0, ejected + 5.2 - time.monotonic()))
    assert ask(gw, 4).startswith("slow: timeout")  # tried again once the time is up ...
    assert ask(gw, 5) == "slow: ejected"  # ... and ejected again at once


def test_a_bad_ejection_setting_is_refused_naming_the_field(gw, tmp_path):
    doc = tmp_path / "bad.yaml"
    doc.write_text("ejection: {after_failures: 2, for_s: 0}\n")
    done = gw.cli("push", "config", str(doc), "--reason", "bad", check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: bad.yaml: ejection.for_s: must be positive"
