"""The admin HTTP API: `gatewayd serve` (two replicas) starts it as a child process on its own
port; every call goes over real HTTP with bearer tokens of each role."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import signal
import sqlite3
import threading
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from gatewayd import config
from support.gateway import ADMIN_TOKENS, KEYS, POLICY, ROUTING, Gateway

REPLICAS = 2
POLICY_INVOICES = (
    POLICY
    + """\
  - id: block-invoices
    when: {prompt: {keywords: [invoice]}}
    action: deny
"""
)
BAD_POLICY = "default: allow\nrules:\n  - id: oops\n    action: explode\n"


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock_port, fragile_port):
    g = Gateway(tmp_path_factory.mktemp("admin"), mock_port, fragile_port, workers=REPLICAS, admin=True).start()
    wait_in_sync(g)
    yield g
    g.stop()


def client(gw: Gateway, role: str | None) -> httpx.Client:
    headers = {"authorization": f"Bearer {ADMIN_TOKENS[role]}"} if role else {}
    return httpx.Client(base_url=gw.admin_url, headers=headers, timeout=30)


def get(gw: Gateway, path: str, role: str = "viewer", **params) -> httpx.Response:
    with client(gw, role) as c:
        return c.get(path, params=params)


def flip(gw: Gateway, verb: str, role: str = "operator", **body) -> httpx.Response:
    with client(gw, role) as c:
        return c.post(f"/v1/{verb}", json=body)


def push(gw: Gateway, document: str, role: str = "admin", **params) -> httpx.Response:
    with client(gw, role) as c:
        return c.post("/v1/versions/policy", content=document.encode(), params=params)


def active_policy(gw: Gateway) -> int:
    pointers = get(gw, "/v1/status").json()["pointers"]
    return next(p["version"] for p in pointers if p["domain"] == "policy" and p["scope"] == "default")


def policy_versions(gw: Gateway) -> list[dict]:
    return get(gw, "/v1/versions/policy").json()["versions"]


def wait_in_sync(gw: Gateway, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = get(gw, "/v1/status").json()
        replicas = status["replicas"]
        if len(replicas) == REPLICAS and all(r["state"] == "in sync" for r in replicas):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def served_policy_versions(gw: Gateway, prompt: str = "hello") -> set[str]:
    """The policy version headers of a few requests, which land on either replica."""
    seen = set()
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": prompt}]}
    with httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {KEYS['acme']}"}, timeout=10) as c:
        for _ in range(6):
            seen.add(c.post("/v1/chat/completions", json=body).headers["x-gatewayd-policy-version"])
    return seen


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def assert_error(r: httpx.Response, status: int, code: str, *needles: str) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code, error
    for needle in needles:
        assert needle in error["message"], error


def test_admin_token_create_prints_the_token_once_with_its_config_lines(gw):
    out = gw.cli("admin-token", "create", "--name", "ci-deployer", "--role", "operator").stdout
    token = out.splitlines()[0].rsplit(" ", 1)[1]
    entry = tomllib.loads(out.split("add to the config file:\n", 1)[1])["admin_tokens"][0]
    assert entry == {"name": "ci-deployer", "role": "operator", "sha256": hashlib.sha256(token.encode()).hexdigest()}
    assert out.count(token) == 1
    refused = gw.cli("admin-token", "create", "--name", "x", "--role", "root", check=False)
    assert refused.returncode == 2 and "--role: invalid choice" in refused.stderr


def test_config_names_the_bad_admin_token_field(tmp_path):
    base = '[providers.p]\nkind = "openai"\nbase_url = "http://127.0.0.1:1/v1"\n'
    digest = "ab" * 32
    cases = [
        (f'[[admin_tokens]]\nname = "a"\nrole = "root"\nsha256 = "{digest}"\n', "admin_tokens[0].role"),
        ('[[admin_tokens]]\nname = "a"\nrole = "admin"\nsha256 = "not-hex"\n', "admin_tokens[0].sha256"),
        (f'[[admin_tokens]]\nname = ""\nrole = "admin"\nsha256 = "{digest}"\n', "admin_tokens[0].name"),
        ("[server]\nadmin_port = 9901\n", "admin_tokens: server.admin_port is set"),
    ]
    for extra, field in cases:
        path = tmp_path / "gatewayd.toml"
        path.write_text(extra + base)
        with pytest.raises(config.ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
            config.load(path)


def test_a_missing_or_unknown_token_is_401(gw):
    assert httpx.get(gw.admin_url + "/healthz").status_code == 200
    for headers in ({}, {"authorization": "Bearer nope"}, {"authorization": f"Basic {ADMIN_TOKENS['admin']}"}):
        r = httpx.get(gw.admin_url + "/v1/status", headers=headers)
        assert_error(r, 401, "invalid_token", "Authorization: Bearer")
        assert r.json()["error"]["type"] == "authentication_error"
        assert r.headers["www-authenticate"] == "Bearer"


def test_roles_viewer_reads_operator_flips_admin_pushes(gw):
    before = policy_versions(gw)
    current = active_policy(gw)
    assert get(gw, "/v1/status").status_code == 200
    r = flip(gw, "activate", role="viewer", domain="policy", version=1, reason="viewer tries")
    assert_error(r, 403, "insufficient_role", "role viewer", "needs operator")
    assert r.json()["error"]["type"] == "permission_error"
    assert_error(flip(gw, "rollback", role="viewer", domain="policy", reason="no"), 403, "insufficient_role")
    for role in ("viewer", "operator"):
        assert_error(push(gw, POLICY, role=role, reason="not mine to push"), 403, "insufficient_role", "needs admin")
    assert policy_versions(gw) == before and active_policy(gw) == current
    r = push(gw, POLICY, reason="an admin may push")
    assert r.status_code == 201, r.text
    assert r.json()["actor"] == "token:ci-admin"
    assert r.headers["location"] == f"/v1/versions/policy/{r.json()['id']}"
    assert active_policy(gw) == current  # pushed, not activated


def test_a_bad_document_is_400_naming_the_field_and_nothing_is_stored(gw):
    before = policy_versions(gw)
    r = push(gw, BAD_POLICY, name="policy-bad.yaml", reason="try a broken one")
    assert_error(r, 400, "invalid_document", "policy-bad.yaml: rules[0].action")
    assert_error(push(gw, "rules: [\n", reason="truncated"), 400, "invalid_document", "line 2")
    assert_error(push(gw, POLICY, name="../etc/policy.yaml", reason="sneaky"), 400, "invalid_request", "name:")
    assert_error(push(gw, POLICY), 400, "missing_reason", "reason: required")
    with client(gw, "admin") as c:
        assert_error(c.post("/v1/versions/nope", content=b"{}", params={"reason": "x"}), 404, "not_found")
    assert policy_versions(gw) == before


def test_push_activate_rollback_round_trip(gw):
    previous = active_policy(gw)
    with client(gw, "admin") as c:
        headers = {"x-gatewayd-name": "policy-v2.yaml", "x-gatewayd-reason": "block invoices"}
        pushed = c.post("/v1/versions/policy", content=POLICY_INVOICES.encode(), headers=headers).json()
    new = pushed["id"]
    stored = get(gw, f"/v1/versions/policy/{new}")
    assert stored.content == POLICY_INVOICES.encode()
    assert stored.headers["content-type"] == "application/yaml"
    assert stored.headers["x-gatewayd-digest"] == "sha256:" + hashlib.sha256(POLICY_INVOICES.encode()).hexdigest()
    assert pushed["digest"] == stored.headers["x-gatewayd-digest"] and pushed["reason"] == "block invoices"

    r = flip(gw, "activate", domain="policy", version=new, reason="block invoices now")
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["ok"] and report["summary"].startswith(f"in effect: {REPLICAS}/{REPLICAS}")
    assert [a["state"] for a in report["replicas"]] == ["in sync"] * REPLICAS
    assert report["last_ack_ms"] is not None and report["last_ack_ms"] >= 0
    change = report["change"]
    assert change["actor"] == "token:ci-operator" and change["kind"] == "activate"
    assert change["reason"] == "block invoices now"
    assert change["items"] == [{"domain": "policy", "scope": "default", "prev": previous, "new": new}]
    assert served_policy_versions(gw) == {str(new)}

    r = flip(gw, "rollback", role="admin", domain="policy", reason="false positives on invoices")
    assert r.status_code == 200, r.text
    assert r.json()["change"]["items"][0] == {"domain": "policy", "scope": "default", "prev": new, "new": previous}
    assert [a["state"] for a in r.json()["replicas"]] == ["in sync"] * REPLICAS
    assert served_policy_versions(gw) == {str(previous)}

    changes = get(gw, "/v1/history", domain="policy").json()["changes"]
    assert [(c["kind"], c["actor"], c["reason"]) for c in changes[-2:]] == [
        ("activate", "token:ci-operator", "block invoices now"),
        ("rollback", "token:ci-admin", "false positives on invoices"),
    ]
    assert get(gw, "/v1/status").json()["last_change"] == changes[-1]


def test_a_flip_without_a_reason_is_refused_and_nothing_changes(gw):
    status = get(gw, "/v1/status").json()
    version = policy_versions(gw)[0]["id"]
    for body in ({}, {"reason": ""}, {"reason": "   "}):
        r = flip(gw, "activate", domain="policy", version=version, **body)
        assert_error(r, 400, "missing_reason", "reason: required")
        assert_error(flip(gw, "rollback", domain="policy", **body), 400, "missing_reason")
    assert_error(flip(gw, "activate", domain="policy", reason="no version"), 400, "invalid_request", "version")
    r = flip(gw, "activate", domain="policy", version="two", reason="typed wrong")
    assert_error(r, 400, "invalid_request", "$.version")
    r = flip(gw, "activate", domain="policy", version=999, reason="not there")
    assert_error(r, 400, "invalid_request", "does not exist")
    assert get(gw, "/v1/status").json()["last_change"] == status["last_change"]


def test_at_answers_across_flips(gw):
    pushed = push(gw, POLICY_INVOICES, reason="for the at test").json()["id"]
    before_id = active_policy(gw)
    t0 = time.time()
    assert flip(gw, "activate", domain="policy", version=pushed, reason="at: forward").status_code == 200
    t1 = time.time()
    assert flip(gw, "rollback", domain="policy", reason="at: back").status_code == 200
    t2 = time.time()
    replicas = sorted(r["name"] for r in get(gw, "/v1/status").json()["replicas"])

    def policy_at(t: float) -> dict:
        answer = get(gw, "/v1/at", t=iso(t)).json()
        assert answer["at"] == pytest.approx(t, abs=1e-5)
        return next(e for e in answer["in_effect"] if (e["domain"], e["scope"]) == ("policy", "default"))

    assert policy_at(t0)["version"] == before_id
    at_t1 = policy_at(t1)
    assert at_t1["version"] == pushed and at_t1["change"]["reason"] == "at: forward"
    assert at_t1["acknowledged_by"] == replicas
    assert policy_at(t2)["version"] == before_id and policy_at(t2)["change"]["kind"] == "rollback"
    assert get(gw, "/v1/at", t="2000-01-01T00:00:00Z").json()["in_effect"] == []
    assert_error(get(gw, "/v1/at", t="yesterday-ish"), 400, "invalid_request", "t: not an ISO 8601 time")
    assert_error(get(gw, "/v1/at"), 400, "invalid_request", "t: required")


def test_a_flip_from_a_stale_read_is_409_and_changes_nothing(gw):
    """Two operators read the same pointer and both flip from it: the second loses the
    compare-and-set instead of overriding the first one's change unseen."""
    seen = active_policy(gw)
    first = push(gw, POLICY_INVOICES, reason="operator A's candidate").json()["id"]
    second = push(gw, POLICY, reason="operator B's candidate").json()["id"]
    assert flip(gw, "activate", domain="policy", version=first, expect=seen, reason="A").status_code == 200
    last = get(gw, "/v1/status").json()["last_change"]
    r = flip(gw, "activate", domain="policy", version=second, expect=seen, reason="B")
    assert_error(r, 409, "conflict", f"moved to version {first} (expected {seen})")
    assert_error(flip(gw, "rollback", domain="policy", expect=seen, reason="B undoes"), 409, "conflict")
    assert get(gw, "/v1/status").json()["last_change"] == last and active_policy(gw) == first
    assert flip(gw, "rollback", domain="policy", expect=first, reason="A undoes").status_code == 200


def test_a_replica_that_does_not_answer_gives_504_and_the_api_stays_responsive(gw):
    status = wait_in_sync(gw)
    stuck = status["replicas"][0]
    target = push(gw, POLICY_INVOICES, reason="for the barrier test").json()["id"]
    pause_outside_a_store_write(gw, stuck["pid"])
    try:
        result: dict = {}
        body = {"domain": "policy", "version": target, "timeout_s": 1.5, "reason": "one replica is stuck"}
        flipping = threading.Thread(target=lambda: result.update(r=flip(gw, "activate", **body)))
        flipping.start()
        time.sleep(0.3)
        assert get(gw, "/v1/status").status_code == 200 and flipping.is_alive()  # served during the barrier
        flipping.join()
    finally:
        os.kill(stuck["pid"], signal.SIGCONT)
    r = result["r"]
    assert r.status_code == 504, r.text
    report = r.json()
    assert not report["ok"] and report["summary"].startswith("NOT in effect")
    states = {a["replica"]: a["state"] for a in report["replicas"]}
    assert states.pop(stuck["name"]) == "no answer" and set(states.values()) == {"in sync"}
    wait_in_sync(gw)  # recorded all the same: the stuck replica catches up once resumed
    assert served_policy_versions(gw) == {str(target)}
    assert flip(gw, "rollback", domain="policy", reason="undo the barrier test").status_code == 200


def test_unknown_routes_versions_and_methods(gw):
    assert_error(get(gw, "/v1/versions/policy/999"), 404, "not_found", "policy version 999 does not exist")
    assert_error(get(gw, "/v1/versions/nope"), 404, "not_found", "unknown domain 'nope'")
    assert_error(get(gw, "/v1/nothing"), 404, "not_found")
    assert_error(get(gw, "/v1/history", domain="nope"), 400, "invalid_request", "unknown domain")
    with client(gw, "admin") as c:
        r = c.delete("/v1/status")
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "GET"


def pause_outside_a_store_write(gw: Gateway, pid: int) -> None:
    """SIGSTOPs a replica, retrying until it was not caught holding the store's write lock
    (a heartbeat is a short transaction): a frozen writer would block every flip."""
    db = sqlite3.connect(gw.root / "control" / "control.sqlite3", timeout=0, isolation_level=None)
    try:
        while True:
            os.kill(pid, signal.SIGSTOP)
            while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("T", "t"):
                time.sleep(0.001)
            try:
                db.execute("BEGIN IMMEDIATE")
                db.execute("ROLLBACK")
                return
            except sqlite3.OperationalError:
                os.kill(pid, signal.SIGCONT)
                time.sleep(0.01)
    finally:
        db.close()


def test_metrics_are_served_to_any_admin_token(gw):
    served_policy_versions(gw, "count me in the metrics")
    assert_error(httpx.get(gw.admin_url + "/metrics"), 401, "invalid_token")
    deadline = time.monotonic() + 10
    while True:  # workers write their figures each second
        r = get(gw, "/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        lines = [line for line in r.text.splitlines() if line.startswith("gatewayd_replica_versions{")]
        replicas = {line.split('replica="')[1].split('"')[0] for line in lines}
        if len(replicas) == REPLICAS and "gatewayd_requests_total{" in r.text or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(replicas) == REPLICAS and "gatewayd_requests_total{" in r.text, r.text


def test_metrics_can_be_kept_off_the_data_port(tmp_path, mock_port, fragile_port):
    g = Gateway(tmp_path, mock_port, fragile_port, admin=True)
    g.start(wrapper=["env", "GATEWAYD_SERVER_METRICS_ON_DATA_PORT=false"])
    try:
        assert httpx.get(g.url + "/metrics").status_code == 404
        assert get(g, "/metrics").status_code == 200
    finally:
        g.stop()


def test_a_canary_is_started_moved_and_promoted_through_the_barrier(gw):
    routing = get(gw, "/v1/versions/routing").json()["versions"][0]["id"]
    with client(gw, "admin") as c:
        headers = {"x-gatewayd-name": "routing-again.yaml", "x-gatewayd-reason": "a candidate"}
        candidate = c.post("/v1/versions/routing", content=ROUTING.encode(), headers=headers).json()["id"]
    assert (
        flip(gw, "canary", role="viewer", domain="routing", version=candidate, percent=5, reason="x").status_code == 403
    )
    assert_error(flip(gw, "canary", domain="routing", version=candidate, reason="x"), 400, "invalid_request", "percent")
    assert_error(
        flip(gw, "canary", domain="routing", version=candidate, percent=5, abort=True, reason="x"),
        400,
        "invalid_request",
    )
    assert_error(flip(gw, "canary", domain="routing", percent=5, reason="x"), 400, "invalid_request", "no candidate")

    r = flip(gw, "canary", domain="routing", version=candidate, percent=5, reason="try it")
    assert r.status_code == 200 and r.json()["ok"], r.text
    assert r.json()["change"]["items"] == [
        {"domain": "routing", "scope": "default", "prev": routing, "new": routing,
         "candidate": {"version": candidate, "share": 500}}
    ]  # fmt: skip
    pointer = next(p for p in get(gw, "/v1/status").json()["pointers"] if p["domain"] == "routing")
    assert pointer["candidate"] == {"version": candidate, "share": 500}
    r = flip(gw, "canary", domain="routing", percent=50, reason="next stage")
    assert r.status_code == 200 and r.json()["change"]["items"][0]["candidate"]["share"] == 5000
    r = flip(gw, "canary", domain="routing", abort=True, reason="hold")
    assert r.status_code == 200 and r.json()["change"]["items"][0]["candidate"]["share"] == 0
    r = flip(gw, "promote", domain="routing", reason="ship it")
    assert r.status_code == 200 and r.json()["change"]["kind"] == "promote", r.text
    assert [a["state"] for a in r.json()["replicas"]] == ["in sync"] * REPLICAS
    r = flip(gw, "rollback", domain="routing", reason="back")
    assert r.status_code == 200 and r.json()["change"]["items"][0]["new"] == routing
