"""`audit.on_failure`: what a replica does when its audit chain cannot be written.

The gateway runs under a real file-size limit (prlimit --fsize), so its audit segment
hits EFBIG after a few hundred records: a real write failure, not a simulated one.
"""

from __future__ import annotations

import httpx

from support.gateway import KEYS, Gateway

FSIZE = 256 * 1024  # the segment passes this after ~300 records; the store's files stay below


def _chat(gw: Gateway, cached: bool = False) -> httpx.Response:
    """One request; `cached`: a deterministic one the cache answers once it has been served."""
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "record me"}]}
    if cached:
        body["temperature"] = 0
    return httpx.post(gw.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEYS['acme']}"})


def test_fail_closed_then_open_after_a_real_write_failure(tmp_path, mock_port, fragile_port):
    gw = Gateway(tmp_path, mock_port, fragile_port)
    gw.start(wrapper=["prlimit", f"--fsize={FSIZE}", "--"])
    try:
        assert _chat(gw, cached=True).headers["x-gatewayd-cache"] == "miss"  # now in the cache
        statuses = []
        with httpx.Client() as client:
            for _ in range(2000):
                r = client.post(
                    gw.url + "/v1/chat/completions",
                    json={"model": "mock-gpt", "messages": [{"role": "user", "content": "record me " * 20}]},
                    headers={"authorization": f"Bearer {KEYS['acme']}"},
                )
                statuses.append(r.status_code)
                if r.status_code == 503:
                    assert r.json()["error"]["code"] == "audit_unavailable"
                    break
        assert statuses[-1] == 503, "the chain never failed: raise the request count or lower FSIZE"
        assert set(statuses[:-1]) == {200}
        assert _chat(gw).status_code == 503  # closed stays closed: nothing is served unrecorded
        assert _chat(gw, cached=True).status_code == 503  # a cache hit no more than the rest

        # The control plane still works with a broken chain: switch to fail-open.
        (tmp_path / "open.yaml").write_text("upstream_timeout_s: 5\naudit: {on_failure: open}\n")
        out = gw.cli("push", "config", str(tmp_path / "open.yaml"), "--reason", "serve through the outage").stdout
        done = gw.cli("activate", "config", out.split(" version ")[1].split()[0], "--reason", "audit disk full")
        assert "in effect: 1/1" in done.stdout
        assert _chat(gw).status_code == 200
        metrics = httpx.get(gw.url + "/metrics").text
        unrecorded = [line for line in metrics.splitlines() if line.startswith("gatewayd_unrecorded_requests_total{")]
        assert unrecorded and float(unrecorded[0].rsplit(" ", 1)[1]) >= 1
        # Refused (closed) and unrecorded (open) alike: what the audit alert rule reads.
        failures = [line for line in metrics.splitlines() if line.startswith("gatewayd_audit_write_failures_total{")]
        assert failures and float(failures[0].rsplit(" ", 1)[1]) >= 4
    finally:
        gw.stop()
