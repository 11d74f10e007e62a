"""Staged rollouts and scoped changes through real gateways (docs/ROLLBACK.md R7, R13):
scoped routing and config apply to exactly their scope, canary shares converge and are
sticky, every shift goes through the barrier, promote / abort / rollback move the
positions, a replica started after a canary serves the split, and a rollback compiles
nothing."""

from __future__ import annotations

import re
import time

import anthropic
import httpx
import pytest

from support.gateway import KEYS, ROUTING, RUNTIME, Gateway

USERS = [f"user-{n}" for n in range(1000)]
# A tolerance for the share of 1,000 callers: about five standard deviations at 25 %.
TOLERANCE = 0.07


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock_port, fragile_port):
    g = Gateway(tmp_path_factory.mktemp("rollouts"), mock_port, fragile_port, workers=2).start()
    yield g
    g.stop()


def push(gw: Gateway, domain: str, text: str, name: str) -> int:
    path = gw.root / name
    path.write_text(text)
    out = gw.cli("push", domain, str(path), "--reason", f"push {name}").stdout
    return int(out.split(" version ")[1].split()[0])


def chat(client: httpx.Client, user: str | None = None, tenant: str = "acme", **headers: str) -> httpx.Response:
    body: dict = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hello"}]}
    if user is not None:
        body["user"] = user
    auth = {"authorization": f"Bearer {KEYS[tenant]}", **{k.replace("_", "-"): v for k, v in headers.items()}}
    r = client.post("/v1/chat/completions", json=body, headers=auth)
    assert r.status_code == 200, r.text
    return r


def on_candidate(r: httpx.Response) -> bool:
    positions = dict(p.split("=") for p in r.headers["x-gatewayd-position"].split(", "))
    return positions["routing"] == "candidate"


def candidates(gw: Gateway, users=USERS) -> set[str]:
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        return {user for user in users if on_candidate(chat(client, user))}


def shift(gw: Gateway, *args: str) -> str:
    """A rollout step; returns the CLI's output, which ends with the barrier's report."""
    done = gw.cli(*args, "--reason", f"test: {' '.join(args)}")
    assert any(line.startswith("in effect: 2/2 replicas") for line in done.stdout.splitlines()), done.stdout
    return done.stdout


def test_scoped_routing_and_config_apply_to_exactly_their_scope(gw):
    routing = push(gw, "routing", ROUTING, "scoped-routing.yaml")
    config = push(gw, "config", RUNTIME.replace("300", "301"), "scoped-config.yaml")
    shift(gw, "activate", "routing", str(routing), "--scope", "tenant:free")
    shift(gw, "activate", "config", str(config), "--scope", "route:messages")
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        for _ in range(4):  # both workers
            assert chat(client, tenant="free").headers["x-gatewayd-routing-version"] == str(routing)
            acme = chat(client, tenant="acme")
            assert acme.headers["x-gatewayd-routing-version"] == "1"
            assert acme.headers["x-gatewayd-config-version"] == "1"
    sdk = anthropic.Anthropic(base_url=gw.url, api_key=KEYS["acme"])
    raw = sdk.messages.with_raw_response.create(
        model="mock-claude", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-gatewayd-config-version"] == str(config)
    assert raw.headers["x-gatewayd-routing-version"] == "1"
    # A scope with nothing before its first version stops overriding when rolled back.
    shift(gw, "rollback", "routing", "--scope", "tenant:free")
    shift(gw, "rollback", "config", "--scope", "route:messages")
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        assert chat(client, tenant="free").headers["x-gatewayd-routing-version"] == "1"
    assert "routing/tenant:free" not in gw.cli("status").stdout.splitlines()[0]


@pytest.mark.parametrize("scope", ["nonsense", "tenant:", "route:chats", "tenant:a b", "shadow"])
def test_an_unknown_scope_is_refused_in_one_line_and_changes_nothing(gw, scope):
    before = gw.cli("history").stdout
    done = gw.cli("activate", "policy", "1", "--scope", scope, "--reason", "typo", check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"unknown scope {scope!r}" in lines[0], lines
    assert gw.cli("history").stdout == before


def test_a_canary_splits_by_sticky_bucket_and_raising_it_only_adds_callers(gw):
    candidate = push(gw, "routing", ROUTING, "candidate.yaml")
    out = shift(gw, "canary", "routing", str(candidate), "--percent", "5")
    assert f"routing/default v1 -> v1 + candidate v{candidate} at 5%" in out
    at5 = candidates(gw)
    shift(gw, "canary", "routing", "--percent", "25")
    at25 = candidates(gw)
    assert at5 <= at25, f"moved back to current: {sorted(at5 - at25)[:5]}"
    assert abs(len(at5) / len(USERS) - 0.05) < TOLERANCE / 2, len(at5)
    assert abs(len(at25) / len(USERS) - 0.25) < TOLERANCE, len(at25)
    assert candidates(gw, sorted(at25)[:50]) == set(sorted(at25)[:50])  # the same callers, again
    status = gw.cli("status").stdout
    assert f"routing/default=v1 + candidate v{candidate} at 25%" in status, status
    deadline = time.monotonic() + 10  # traffic by position comes with the heartbeats (every second)
    while not re.search(r"traffic routing/default: candidate (\d+) requests, 0.0% 5xx, current (\d+) requests", status):
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
        status = gw.cli("status").stdout
    on, off = map(int, re.search(r"candidate (\d+) requests.*current (\d+) requests", status).groups())
    assert on >= len(at25) and off >= len(USERS) - len(at25), status

    with httpx.Client(base_url=gw.url, timeout=10) as client:
        inside, outside = sorted(at25)[0], sorted(set(USERS) - at25)[0]
        # The sticky header beats the body's user; without either, the caller's key decides.
        assert on_candidate(chat(client, outside, x_gatewayd_sticky=inside))
        assert not on_candidate(chat(client, inside, x_gatewayd_sticky=outside))
        by_key = {on_candidate(chat(client)) for _ in range(6)}
        assert len(by_key) == 1
        r = chat(client, inside)
        assert r.headers["x-gatewayd-routing-version"] == str(candidate)
        assert r.headers["x-gatewayd-position"] == "policy=current, routing=candidate, config=current"
        request_id = r.headers["x-request-id"]
    sdk = anthropic.Anthropic(base_url=gw.url, api_key=KEYS["acme"])
    raw = sdk.messages.with_raw_response.create(
        model="mock-claude", max_tokens=16, messages=[{"role": "user", "content": "hi"}], metadata={"user_id": inside}
    )
    assert raw.headers["x-gatewayd-routing-version"] == str(candidate)

    record = next(r for r in gw.audit_records() if r.get("request_id") == request_id)
    assert record["routing_version"] == candidate
    assert record["position"] == {"policy": "current", "routing": "candidate", "config": "current"}
    metrics = httpx.get(gw.url + "/metrics", timeout=10).text
    assert f'routing_version="{candidate}",config_version="1",candidate="routing"' in metrics

    shift(gw, "canary", "routing", "--abort")
    assert candidates(gw, sorted(at25)[:100]) == set()
    assert f"candidate v{candidate} at 0%" in gw.cli("status").stdout
    shift(gw, "canary", "routing", "--percent", "25")  # resumes the held candidate
    assert candidates(gw, sorted(at25)[:100]) == set(sorted(at25)[:100])
    shift(gw, "rollback", "routing")  # drops the candidate: everyone back on current
    assert candidates(gw, sorted(at25)[:100]) == set()
    assert "candidate" not in gw.cli("status").stdout.splitlines()[0]


def test_the_cache_keeps_positions_apart(gw):
    candidate = push(gw, "routing", ROUTING, "cache-candidate.yaml")
    shift(gw, "canary", "routing", str(candidate), "--percent", "50")
    on, off = sorted(candidates(gw, USERS[:40])), sorted(set(USERS[:40]) - candidates(gw, USERS[:40]))
    body = {"model": "mock-gpt", "temperature": 0, "messages": [{"role": "user", "content": "cache me"}]}
    auth = {"authorization": f"Bearer {KEYS['acme']}"}
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        first = client.post("/v1/chat/completions", json=body, headers={**auth, "x-gatewayd-sticky": off[0]})
        again = client.post("/v1/chat/completions", json=body, headers={**auth, "x-gatewayd-sticky": off[1]})
        other = client.post("/v1/chat/completions", json=body, headers={**auth, "x-gatewayd-sticky": on[0]})
    assert (first.headers["x-gatewayd-cache"], again.headers["x-gatewayd-cache"]) == ("miss", "hit")
    assert other.headers["x-gatewayd-cache"] == "miss"  # never an answer made under the other position
    shift(gw, "rollback", "routing")


def test_promote_makes_the_candidate_current_and_rollback_returns_warm(gw):
    candidate = push(gw, "routing", ROUTING, "promoted.yaml")
    shift(gw, "canary", "routing", str(candidate), "--percent", "10")
    out = shift(gw, "promote", "routing")
    assert f"routing/default v1 + candidate v{candidate} at 10% -> v{candidate}" in out
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        for user in USERS[:20]:
            r = chat(client, user)
            assert r.headers["x-gatewayd-routing-version"] == str(candidate) and not on_candidate(r)
    history = gw.cli("history", "routing").stdout
    assert "promote" in history and "canary" in history

    # A replica started now never saw v1 served, yet keeps it compiled for the rollback (R7).
    gw.stop()
    gw.start()
    shift(gw, "rollback", "routing")
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        assert chat(client, "user-1").headers["x-gatewayd-routing-version"] == "1"
    rollback = int(gw.cli("history", "routing").stdout.splitlines()[-1].split()[0])
    applied = [
        r
        for r in gw.audit_records()
        if r.get("kind") == "replica" and r.get("event") == "applied" and r.get("change") == rollback
    ]
    assert len(applied) == 2 and all(r["compiled"] == 0 for r in applied), applied


def test_a_replica_started_after_a_canary_serves_the_same_split(gw):
    candidate = push(gw, "routing", ROUTING, "restart-candidate.yaml")
    shift(gw, "canary", "routing", str(candidate), "--percent", "30")
    before = candidates(gw, USERS[:300])
    gw.stop()
    gw.start()
    assert candidates(gw, USERS[:300]) == before
    shift(gw, "rollback", "routing")


def test_canary_commands_refuse_what_makes_no_sense(gw):
    before = gw.cli("history").stdout
    for args, said in (
        (("canary", "routing", "--percent", "10"), "has no candidate"),
        (("canary", "routing", "1", "--percent", "10"), "already serves version 1"),
        (("canary", "routing", "1", "--percent", "0"), "expected more than 0"),
        (("canary", "routing", "1", "--percent", "100.001"), "expected more than 0"),
        (("canary", "routing", "999", "--percent", "10"), "does not exist"),
        (("canary", "routing", "--abort"), "no candidate to abort"),
        (("promote", "routing"), "no candidate to promote"),
        (("canary", "routing", "1", "--percent", "5", "--scope", "bogus"), "unknown scope"),
    ):
        done = gw.cli(*args, "--reason", "nonsense", check=False)
        assert done.returncode == 2, (args, done)
        assert said in done.stderr and len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)
    assert gw.cli("history").stdout == before


def test_a_barrier_report_waits_for_every_replica(gw):
    candidate = push(gw, "routing", ROUTING, "barrier-candidate.yaml")
    started = time.monotonic()
    out = shift(gw, "canary", "routing", str(candidate), "--percent", "1")
    assert time.monotonic() - started < 30
    assert out.count("in sync") == 2, out
    shift(gw, "rollback", "routing")
