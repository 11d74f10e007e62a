"""Caller keys created and revoked at run time, their model globs and rpm, and budgets per
key and tenant enforced across replicas: two gateways (two "hosts") sharing one Redis, the
mock provider, the CLI and the admin API, the official SDKs as clients."""

from __future__ import annotations

import json
import re
import time

import anthropic
import httpx
import openai
import pytest
from conftest import start_provider_mock

from gatewayd.control.keys import Budget, RuntimeKey
from gatewayd.control.local_store import LocalStore
from gatewayd.control.model import StoreDump, StoreIdentity
from gatewayd.control.redis_store import RedisStore
from support.gateway import ADMIN_TOKENS, RUNTIME, Gateway
from support.procs import stop_process
from support.redis import start_redis

PRICED = (
    RUNTIME
    + """\
prices:
  providers:
    mock: {"mock-*": {input: 1, output: 1}}
budgets:
  free: {amount: 30, unit: tokens, period: month}
"""
)
HI = [{"role": "user", "content": "hello from a run-time key"}]


@pytest.fixture(scope="module")
def redis_server():
    url, proc = start_redis()
    yield url, proc
    stop_process(proc)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, mock_port, fragile_port, redis_server):
    url, _ = redis_server
    root = tmp_path_factory.mktemp("keys")
    gateways = []
    try:
        for name, admin in (("kA", True), ("kB", False)):
            (root / name).mkdir()
            gw = Gateway(root / name, mock_port, fragile_port, redis_url=url, prefix=name, admin=admin)
            gateways.append(gw.start())
        priced = root / "priced.yaml"
        priced.write_text(PRICED)
        gateways[0].cli("push", "config", str(priced), "--reason", "prices and budgets")
        gateways[0].cli("activate", "config", "2", "--reason", "prices and budgets")
        yield gateways
    finally:
        for gw in gateways:
            gw.stop()


def create(gw: Gateway, name: str, *options: str) -> str:
    done = gw.cli("keys", "create", "--tenant", "acme", "--name", name, *options)
    assert "in effect: 2/2 replicas acknowledged" in done.stdout, done.stdout
    return re.search(r"\(shown once\): (\S+)", done.stdout).group(1)


def oa(gw: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


def an(gw: Gateway, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)


def test_a_key_created_at_run_time_works_on_every_replica_and_fails_on_all_once_revoked(pair):
    key = create(pair[0], "ci-bot")
    for gw in pair:  # acknowledged by both: usable at once, no waiting
        raw = oa(gw, key).chat.completions.with_raw_response.create(model="mock-gpt", messages=HI)
        assert raw.parse().choices[0].message.content
        msg = an(gw, key).messages.create(model="mock-claude", max_tokens=32, messages=HI)
        assert msg.content[0].text
    request_id = raw.headers["x-request-id"]
    (record,) = [r for r in pair[1].audit_records() if r.get("request_id") == request_id]
    assert (record["tenant"], record["key"]) == ("acme", "ci-bot")

    done = pair[0].cli("keys", "revoke", "ci-bot", "--reason", "leaked in a log")
    assert "in effect: 2/2 replicas acknowledged" in done.stdout
    for gw in pair:  # revoke returned: no replica accepts it any more
        with pytest.raises(openai.AuthenticationError):
            oa(gw, key).chat.completions.create(model="mock-gpt", messages=HI)
        with pytest.raises(anthropic.AuthenticationError):
            an(gw, key).messages.create(model="mock-claude", max_tokens=32, messages=HI)
    listed = pair[1].cli("keys", "list", "--tenant", "acme").stdout
    assert re.search(r"ci-bot\s+tenant=acme .*\[REVOKED by \S+: leaked in a log\]", listed)
    history = pair[0].cli("history").stdout
    assert "revoke key ci-bot: leaked in a log" in history
    again = pair[0].cli("keys", "create", "--tenant", "acme", "--name", "ci-bot", check=False)
    assert again.returncode == 1 and "exists already" in again.stderr
    missing = pair[0].cli("keys", "revoke", "no-such-key", "--reason", "x", check=False)
    assert missing.returncode == 2 and "no-such-key" in missing.stderr


def test_static_keys_keep_working_beside_run_time_ones(pair):
    from support.gateway import KEYS

    for gw in pair:
        assert oa(gw, KEYS["acme"]).chat.completions.create(model="mock-gpt", messages=HI).choices


def test_the_model_allowlist_is_enforced(pair):
    key = create(pair[0], "gpt-only", "--models", "mock-gpt*,mock-embed")
    assert oa(pair[1], key).chat.completions.create(model="mock-gpt", messages=HI).choices
    with pytest.raises(openai.PermissionDeniedError) as denied:
        oa(pair[1], key).chat.completions.create(model="mock-claude", messages=HI)
    error = denied.value.body
    assert denied.value.status_code == 403 and error["code"] == "model_not_allowed"
    assert "mock-claude" in error["message"] and "gpt-only" in error["message"]
    with pytest.raises(anthropic.PermissionDeniedError) as denied_too:
        an(pair[0], key).messages.create(model="mock-claude", max_tokens=32, messages=HI)
    assert denied_too.value.body["error"]["type"] == "permission_error"
    assert "mock-claude" in denied_too.value.body["error"]["message"]


def test_a_keys_rpm_limits_it_like_a_tenant(pair):
    key = create(pair[0], "slow-bot", "--rpm", "60")  # a bucket of 6 per replica
    statuses = []
    with httpx.Client(base_url=pair[0].url, timeout=10) as client:
        for _ in range(10):
            body = {"model": "mock-gpt", "messages": HI}
            r = client.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert "rate limit for key slow-bot" in r.json()["error"]["message"]
    assert statuses.count(200) in (6, 7) and statuses.count(429) >= 3


def wait_for_status(gw: Gateway, key: str, status: int, timeout: float = 10.0) -> httpx.Response:
    """Sends requests until one is answered `status` (spend reaches other replicas within
    a fraction of a second; the deadline is generous for a loaded machine)."""
    deadline = time.monotonic() + timeout
    body = {"model": "mock-gpt", "messages": HI}
    while True:
        r = httpx.post(gw.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
        if r.status_code == status:
            return r
        assert r.status_code == 200 and time.monotonic() < deadline, (r.status_code, r.text)
        time.sleep(0.05)


def test_a_budget_spent_across_two_replicas_stops_requests_on_both(pair):
    key = create(pair[0], "capped", "--budget-tokens", "60", "--period", "day")
    for gw in pair:  # each spends part of it
        oa(gw, key).chat.completions.create(model="mock-gpt", messages=HI)
    refused = wait_for_status(pair[0], key, 429)
    error = refused.json()["error"]
    assert error["code"] == "budget_exceeded" and "key capped (60 tokens per day) is spent" in error["message"]
    tomorrow = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(time.time() + 86400))
    assert f"resets at {tomorrow}" in error["message"]
    assert int(refused.headers["retry-after"]) > 0
    other = wait_for_status(pair[1], key, 429)  # the other replica sees the cluster's spend
    assert other.json()["error"]["code"] == "budget_exceeded"
    with pytest.raises(anthropic.RateLimitError) as limited:
        an(pair[1], key).messages.create(model="mock-claude", max_tokens=32, messages=HI)
    assert "budget of key capped" in limited.value.body["error"]["message"]
    listed = json.loads(pair[1].cli("keys", "list", "--json").stdout)
    (capped,) = [k for k in listed if k["name"] == "capped"]
    assert capped["spent"] >= 60 and capped["budget"] == {"amount": 60.0, "unit": "tokens", "period": "day"}
    metrics = httpx.get(pair[0].url + "/metrics").text
    assert re.search(r'gatewayd_budget_used_ratio\{[^}]*owner="key",name="capped"[^}]*\} (1\.\d+|[2-9])', metrics)


def test_a_key_that_stops_reading_its_streams_still_spends_its_budget(pair, fragile_port):
    """A stream stopped by its client ends before OpenAI's usage chunk: what the provider
    generated until then is charged all the same (estimated), so stopping early is no way
    around a budget. 50 events 300 ms apart: the client takes three and closes."""
    key = create(pair[0], "quitter", "--budget-tokens", "100000", "--period", "day")
    _, fragile = start_provider_mock(fragile_port)
    try:
        stream = oa(pair[0], key).chat.completions.create(model="fragile-model", messages=HI, stream=True)
        for _ in range(3):
            next(stream)
        stream.close()
        deadline = time.monotonic() + 10
        while True:  # the record is written once the gateway sees the hang up; the spend follows
            listed = json.loads(pair[0].cli("keys", "list", "--json").stdout)
            (quitter,) = [k for k in listed if k["name"] == "quitter"]
            if quitter["spent"] > 0 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    finally:
        stop_process(fragile)
    # The prompt (a token per 4 bytes of the body) and an output token per event relayed.
    assert quitter["spent"] >= 3 + len(json.dumps(HI)) // 4, quitter


def test_a_tenant_budget_from_the_config_stops_the_tenant(pair):
    from support.gateway import KEYS

    key = KEYS["free"]  # tenant free: 30 tokens a month in the config
    refused = wait_for_status(pair[1], key, 429)
    assert "budget of tenant free (30 tokens per month) is spent" in refused.json()["error"]["message"]


def test_the_admin_api_creates_lists_and_revokes_keys(pair):
    gw = pair[0]
    admin = {"authorization": f"Bearer {ADMIN_TOKENS['admin']}"}
    operator = {"authorization": f"Bearer {ADMIN_TOKENS['operator']}"}
    body = {"tenant": "acme", "name": "api-bot", "models": ["mock-*"], "budget_usd": 5, "period": "month"}
    assert httpx.post(gw.admin_url + "/v1/keys", json=body, headers=operator).status_code == 403
    made = httpx.post(gw.admin_url + "/v1/keys", json=body, headers=admin, timeout=30)
    assert made.status_code == 201 and made.json()["barrier"]["ok"], made.text
    key = made.json()["key"]
    assert oa(pair[1], key).chat.completions.create(model="mock-gpt", messages=HI).choices
    deadline = time.monotonic() + 10
    while True:  # the replica sends its spend to the store a few times a second
        listed = httpx.get(gw.admin_url + "/v1/keys?tenant=acme", headers=admin).json()["keys"]
        (api_bot,) = [k for k in listed if k["name"] == "api-bot"]
        if api_bot["spent"] > 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert api_bot["models"] == ["mock-*"] and api_bot["spent"] > 0 and "sha256" in api_bot
    assert not any(key in json.dumps(k) for k in listed)  # stored as a hash only
    bad = httpx.post(gw.admin_url + "/v1/keys", json={**body, "period": "week"}, headers=admin)
    assert bad.status_code == 400 and "--period" in bad.json()["error"]["message"]
    no_reason = httpx.post(gw.admin_url + "/v1/keys/api-bot/revoke", json={}, headers=admin)
    assert no_reason.status_code == 400 and no_reason.json()["error"]["code"] == "missing_reason"
    revoked = httpx.post(gw.admin_url + "/v1/keys/api-bot/revoke", json={"reason": "rotated"}, headers=admin)
    assert revoked.status_code == 200 and revoked.json()["ok"]
    with pytest.raises(openai.AuthenticationError):
        oa(pair[1], key).chat.completions.create(model="mock-gpt", messages=HI)


def test_with_the_store_down_budgets_fall_back_to_per_replica_counters_and_say_so(pair, redis_server):
    key = create(pair[0], "outage", "--budget-tokens", "40", "--period", "month")
    _, redis = redis_server
    stop_process(redis)  # the last test of the module: nothing needs Redis after it
    deadline = time.monotonic() + 10
    while "per-replica" not in (httpx.get(pair[0].url + "/readyz").json()["budgets"] or ""):
        httpx.post(
            pair[0].url + "/v1/chat/completions",
            json={"model": "mock-gpt", "messages": HI},
            headers={"authorization": f"Bearer {key}"},
        )
        assert time.monotonic() < deadline, "readyz never said budgets are per replica"
        time.sleep(0.1)
    refused = wait_for_status(pair[0], key, 429)  # enforced all the same: never fails open
    assert refused.json()["error"]["code"] == "budget_exceeded"


@pytest.mark.parametrize("kind", ["local", "redis"])
def test_both_stores_keep_keys_and_spend_and_a_backup_carries_the_keys(kind, tmp_path, request):
    if kind == "local":
        store, restored = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    else:
        url, proc = start_redis()
        request.addfinalizer(lambda: stop_process(proc))
        store, restored = RedisStore(url, "a"), RedisStore(url, "b")
    key = RuntimeKey("bot", "acme", "ab" * 32, 1.0, "me", ("mock-*",), 5, Budget(3.0, "usd", "day"))
    assert store.add_key(key) and not store.add_key(key)  # a name is never given twice
    store.set_key(RuntimeKey("bot", "acme", "ab" * 32, 1.0, "me", revoked_at=2.0))
    assert [k.revoked for k in store.runtime_keys()] == [True]
    store.add_spend({"key:bot@2026-12": (0.5, 10), "tenant:acme@2026-12": (0.25, 4)})
    store.add_spend({"key:bot@2026-12": (0.5, 10)})
    assert store.spend(["key:bot@2026-12", "tenant:acme@2026-12", "none"]) == {
        "key:bot@2026-12": (1.0, 20),
        "tenant:acme@2026-12": (0.25, 4),
    }
    dump = StoreDump(StoreIdentity("e" * 32, 1.0), [], {}, [], [], store.runtime_keys())
    assert restored.seed(dump) and restored.runtime_keys() == store.runtime_keys()
