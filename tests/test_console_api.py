"""What the console stands on, over real HTTP against `gatewayd serve` with its admin API
(two replicas, the embedded store): sessions and their cookie, CSRF, the page's headers,
the live stream, the kill switch, diffs, the audit view and the control-plane series."""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path

import httpx
import pytest

from support.gateway import ADMIN_TOKENS, POLICY, POLICY_V2, Gateway
from support.procs import _tail

REPLICAS = 2


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock_port, fragile_port):
    g = Gateway(tmp_path_factory.mktemp("console-api"), mock_port, fragile_port, workers=REPLICAS, admin=True).start()
    with bearer(g, "viewer") as c:
        deadline = time.monotonic() + 30
        while not all_in_sync(c.get("/v1/status").json()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    yield g
    g.stop()


def all_in_sync(status: dict) -> bool:
    return len(status["replicas"]) == REPLICAS and all(r["state"] == "in sync" for r in status["replicas"])


def bearer(gw: Gateway, role: str) -> httpx.Client:
    return httpx.Client(base_url=gw.admin_url, headers={"authorization": f"Bearer {ADMIN_TOKENS[role]}"}, timeout=30)


def signed_in(gw: Gateway, role: str) -> tuple[httpx.Client, dict]:
    """A client holding a console session cookie (and no token), and the session's view."""
    c = httpx.Client(base_url=gw.admin_url, timeout=30)
    r = c.post("/console/session", json={"token": ADMIN_TOKENS[role]})
    assert r.status_code == 200, r.text
    return c, r.json()


def test_sign_in_sets_an_httponly_samesite_cookie_and_never_echoes_the_token(gw):
    c, view = signed_in(gw, "operator")
    with contextlib.closing(c):
        r = c.post("/console/session", json={"token": ADMIN_TOKENS["operator"]})
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("gatewayd_session=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert "Path=/" in cookie and ADMIN_TOKENS["operator"] not in cookie
        assert ADMIN_TOKENS["operator"] not in r.text
        assert view["name"] == "ci-operator" and view["role"] == "operator" and len(view["csrf"]) >= 32
        assert c.get("/v1/status").status_code == 200  # the cookie alone authenticates
        https = c.post(
            "/console/session", json={"token": ADMIN_TOKENS["viewer"]}, headers={"x-forwarded-proto": "https"}
        )
        assert "; Secure" in https.headers["set-cookie"]


def test_sign_in_refuses_bad_tokens_bodies_and_other_origins_in_the_error_shape(gw):
    json_type = {"content-type": "application/json"}
    with httpx.Client(base_url=gw.admin_url, timeout=10) as c:
        host = gw.admin_url.removeprefix("http://")
        for body, headers, status, code in (
            (json.dumps({"token": "nope"}), json_type, 401, "invalid_token"),
            ("not json", json_type, 400, "invalid_request"),
            (json.dumps({"token": 1}), json_type, 400, "invalid_request"),
            ("x" * 5000, json_type, 413, "body_too_large"),
            # What a cross-site form can send: no JSON content type, or another origin.
            (
                json.dumps({"token": ADMIN_TOKENS["admin"]}),
                {"content-type": "text/plain"},
                415,
                "unsupported_media_type",
            ),
            (
                json.dumps({"token": ADMIN_TOKENS["admin"]}),
                {**json_type, "origin": "https://evil.example"},
                403,
                "cross_origin",
            ),
        ):
            r = c.post("/console/session", content=body, headers=headers)
            assert r.status_code == status, r.text
            assert r.json()["error"]["code"] == code and "set-cookie" not in r.headers
        same = c.post("/console/session", json={"token": ADMIN_TOKENS["viewer"]}, headers={"origin": f"http://{host}"})
        assert same.status_code == 200
        forged = c.get("/v1/status", headers={"cookie": "gatewayd_session=forged"})
        assert forged.status_code == 401 and forged.json()["error"]["code"] == "invalid_token"


def test_signing_out_ends_the_live_stream(gw):
    c, view = signed_in(gw, "viewer")
    with contextlib.closing(c), c.stream("GET", "/v1/live") as stream:
        lines = stream.iter_lines()
        assert next(line for line in lines if line.startswith("event: ")) in ("event: status", "event: rates")
        other = httpx.Client(base_url=gw.admin_url, cookies=c.cookies, timeout=10)
        with contextlib.closing(other):
            assert other.delete("/console/session", headers={"x-csrf-token": view["csrf"]}).status_code == 200
        deadline = time.monotonic() + 20
        for _ in lines:  # ends at the next event or keepalive after the session closed
            assert time.monotonic() < deadline


def test_changes_from_a_session_need_its_csrf_token(gw):
    c, view = signed_in(gw, "operator")
    body = {"domain": "policy", "reason": "csrf probe"}
    with contextlib.closing(c):
        for headers in ({}, {"x-csrf-token": "wrong"}, {"x-csrf-token": signed_in(gw, "operator")[1]["csrf"]}):
            r = c.post("/v1/rollback", json=body, headers=headers)
            assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed", r.text
        assert c.post("/v1/audit/verify").status_code == 403  # every POST, not only flips
        assert c.delete("/console/session").status_code == 403  # signing out too
        # With the right token the call reaches the registry (nothing to roll back to: 400).
        r = c.post("/v1/rollback", json=body, headers={"x-csrf-token": view["csrf"]})
        assert r.status_code == 400 and r.json()["error"]["code"] != "csrf_failed", r.text
        out = c.delete("/console/session", headers={"x-csrf-token": view["csrf"]})
        assert out.status_code == 200 and "Max-Age=0" in out.headers["set-cookie"]
        assert c.get("/v1/status").status_code == 401  # the session is gone on the server


def test_the_page_sends_a_content_security_policy_and_no_data(gw):
    with httpx.Client(base_url=gw.admin_url, timeout=10) as c:
        page = c.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert "<script" in page.text and 'src="/console/console.js"' in page.text and "token" in page.text
        for asset in ("console.js", "dom.js", "chart.js", "console.css"):
            r = c.get(f"/console/{asset}")
            assert r.status_code == 200 and r.headers["etag"], asset
            assert c.get(f"/console/{asset}", headers={"if-none-match": r.headers["etag"]}).status_code == 304
        assert c.get("/console/nope.js").status_code == 401  # not an asset: an API path, and no token
        assert c.get("/v1/status").headers["content-security-policy"] == csp


def test_the_token_never_reaches_a_log(gw):
    c, view = signed_in(gw, "admin")
    with contextlib.closing(c):
        c.post("/console/session", json={"token": "wrong-token-attempt"})
        c.post(
            "/v1/activate",
            json={"domain": "policy", "version": 1, "reason": "log probe"},
            headers={"x-csrf-token": view["csrf"]},
        )
    with bearer(gw, "operator") as b:
        b.get("/v1/status")
    log = _tail(gw.proc.log, 1_000_000)
    assert "console session opened for token:ci-admin" in log
    for secret in (*ADMIN_TOKENS.values(), "wrong-token-attempt", view["csrf"]):
        assert secret not in log


def test_the_live_stream_sends_the_state_and_each_acknowledgement(gw):
    c, view = signed_in(gw, "admin")
    events: list[tuple[str, dict]] = []
    with contextlib.closing(c), c.stream("GET", "/v1/live") as stream:
        assert stream.headers["content-type"] == "text/event-stream"
        lines = stream.iter_lines()

        def next_status() -> dict:
            kind = ""
            for line in lines:
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "status":
                    return json.loads(line[6:])
                elif line.startswith("data: "):
                    events.append((kind, json.loads(line[6:])))
            raise AssertionError("stream ended")

        first = next_status()
        assert {p["domain"] for p in first["pointers"]} >= {"policy", "routing", "config"}
        assert len(first["replicas"]) == REPLICAS
        pushed = c.post(
            "/v1/versions/policy",
            content=POLICY_V2.encode(),
            params={"reason": "live"},
            headers={"x-csrf-token": view["csrf"]},
        ).json()
        flip = c.post(
            "/v1/activate",
            json={"domain": "policy", "version": pushed["id"], "reason": "watch it"},
            headers={"x-csrf-token": view["csrf"]},
        )
        assert flip.status_code == 200, flip.text
        change = flip.json()["change"]["id"]
        while True:
            state = next_status()
            if state["last_change"]["id"] == change and len(state["acks"]) == REPLICAS and all_in_sync(state):
                break
        assert all(a["ok"] for a in state["acks"])
        policy = next(p for p in state["pointers"] if p["domain"] == "policy" and p["scope"] == "default")
        assert policy["current"] == pushed["id"] and policy["previous"] is not None


def test_kill_switch_diff_and_audit_over_the_api(gw):
    with bearer(gw, "operator") as op, bearer(gw, "admin") as admin, bearer(gw, "viewer") as viewer:
        r = op.post("/v1/killswitch", json={"state": "on", "reason": "incident 42"})
        assert r.status_code == 200 and r.json()["ok"], r.text
        again = op.post("/v1/killswitch", json={"state": "on", "reason": "twice"})
        assert again.status_code == 400 and "already engaged" in again.json()["error"]["message"]
        assert op.post("/v1/killswitch", json={"state": "off", "reason": "resolved"}).status_code == 200
        bad = op.post("/v1/killswitch", json={"state": "maybe", "reason": "x"})
        assert bad.status_code == 400 and "state" in bad.json()["error"]["message"]
        assert viewer.post("/v1/killswitch", json={"state": "on", "reason": "x"}).status_code == 403

        v = admin.post("/v1/versions/policy", content=(POLICY + "# one more line\n").encode(), params={"reason": "d"})
        diff = viewer.get(f"/v1/versions/policy/{v.json()['id']}/diff").json()
        assert diff["against"] == v.json()["id"] - 1
        assert "+# one more line" in diff["diff"].splitlines()
        first = viewer.get("/v1/versions/policy/1/diff").json()
        assert first["against"] is None and first["diff"].startswith("--- /dev/null")
        assert viewer.get("/v1/versions/policy/999/diff").status_code == 404

        state = viewer.get("/v1/audit").json()
        assert len(state["chains"]) == REPLICAS
        verified = viewer.post("/v1/audit/verify")
        assert verified.status_code == 200 and verified.json()["intact"], verified.text
        assert {c["chain"] for c in verified.json()["chains"]} == {c["chain"] for c in state["chains"]}
        assert viewer.get("/v1/audit").json()["last_verification"]["intact"]

        metrics = viewer.get("/metrics").text
        assert "gatewayd_control_store_up 1" in metrics
        assert metrics.count("gatewayd_control_replica_state{replica=") == REPLICAS
        assert 'gatewayd_admin_barriers_total{result="in effect"}' in metrics
        last = next(line for line in metrics.splitlines() if line.startswith("gatewayd_audit_last_verified_timestamp"))
        assert abs(float(last.split()[1]) - time.time()) < 600
        assert "gatewayd_audit_write_failures_total{" in metrics


def test_every_series_the_alert_rules_read_is_served(gw):
    """The alert rules name series by hand: each must be a family the admin /metrics serves."""
    rules = (Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "alerts.yaml").read_text()
    named = set(re.findall(r"\b(gatewayd_[a-z_]+)", rules))
    with bearer(gw, "viewer") as c:
        served = set(re.findall(r"^# TYPE (gatewayd_[a-z_]+) ", c.get("/metrics").text, re.M))
    assert named and named <= served, named - served
