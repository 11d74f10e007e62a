"""Control plane with real parts: three gateways ("hosts") sharing a real redis-server,
under traffic; the CLI as operators run it."""

from __future__ import annotations

import signal
import time

import httpx
import pytest
import redis

from support.gateway import KEYS, POLICY_V2, Gateway, wait_ready
from support.procs import stop_process
from support.redis import start_redis
from support.traffic import Traffic

EXTRA_PROVIDER = """
[providers.extra]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
"""

ROUTING_WITH_EXTRA = """\
routes:
  - {match: "mock-*", provider: mock}
  - {match: "mock-*", provider: mock-anthropic}
  - {match: "extra-*", provider: extra}
models: [mock-gpt]
"""


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("redis")
    url, proc = start_redis(dir=data, appendonly=True)
    server = {"url": url, "proc": proc, "dir": data, "port": int(url.rsplit(":", 1)[1].split("/")[0])}
    yield server
    stop_process(server["proc"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, mock_port, fragile_port, redis_server):
    """gwA and gwB know the provider `extra`; gwC does not, so it refuses routing that needs it."""
    gateways = []
    for prefix in ("gwA", "gwB", "gwC"):
        extra = EXTRA_PROVIDER if prefix != "gwC" else ""
        gw = Gateway(
            tmp_path_factory.mktemp(prefix),
            mock_port,
            fragile_port,
            redis_url=redis_server["url"],
            prefix=prefix,
            extra_providers=extra,
        )
        gateways.append(gw.start())
    yield gateways
    for gw in gateways:
        gw.stop()


def operator(cluster) -> Gateway:
    """The CLI runs with gwA's config (which knows every provider)."""
    return cluster[0]


def urls(cluster) -> list[str]:
    return [gw.url for gw in cluster if gw.proc is not None]


def push(gw: Gateway, tmp_path, domain: str, text: str, name: str) -> int:
    path = tmp_path / name
    path.write_text(text)
    out = gw.cli("push", domain, str(path), "--reason", f"test {name}").stdout
    return int(out.split(" version ")[1].split()[0])


def test_activate_and_rollback_under_load_reach_every_replica(cluster, tmp_path):
    op = operator(cluster)
    v2 = push(op, tmp_path, "policy", POLICY_V2, "policy-v2.yaml")
    with Traffic(urls(cluster), KEYS["acme"], threads=6) as traffic:
        traffic.wait_for(30, after=0)
        done = op.cli("activate", "policy", str(v2), "--reason", "tighten")
        assert "in effect: 3/3 replicas acknowledged" in done.stdout, done.stdout
        activated = time.time()
        traffic.wait_for(60, after=activated)
        rollback_issued = time.time()
        done = op.cli("rollback", "policy", "--reason", "false positives")
        assert "in effect: 3/3 replicas acknowledged" in done.stdout, done.stdout
        rolled_back = time.time()
        traffic.wait_for(60, after=rolled_back)
    assert not traffic.errors
    assert all(s.status == 200 for s in traffic.samples)
    # Every request that started after a command returned was served by the new state.
    assert {s.policy_version for s in traffic.samples if activated <= s.started < rollback_issued} == {v2}
    assert {s.policy_version for s in traffic.since(rolled_back)} == {v2 - 1}
    history = op.cli("history", "policy").stdout
    assert "activate" in history and "rollback" in history and "false positives" in history


def test_a_replica_that_cannot_compile_refuses_and_keeps_serving(cluster, tmp_path):
    op = operator(cluster)
    v = push(op, tmp_path, "routing", ROUTING_WITH_EXTRA, "routing-extra.yaml")
    done = op.cli("activate", "routing", str(v), "--reason", "add extra", check=False)
    assert done.returncode == 1
    assert "NOT in effect" in done.stdout
    refused = [line for line in done.stdout.splitlines() if "REFUSED" in line]
    assert len(refused) == 1 and "gwC" in refused[0] and "extra" in refused[0]
    headers = {"authorization": f"Bearer {KEYS['acme']}"}
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "which routing"}]}
    served = {
        gw.root.name[:3]: httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers).headers
        for gw in cluster
    }
    assert served["gwC"]["x-gatewayd-routing-version"] == str(v - 1)  # its last good version
    assert served["gwA"]["x-gatewayd-routing-version"] == str(v)
    done = op.cli("rollback", "routing", "--reason", "gwC cannot serve it")
    assert "in effect: 3/3" in done.stdout


def test_cache_entries_of_a_reverted_version_are_never_served(cluster, tmp_path):
    op = operator(cluster)
    gw = cluster[1]
    headers = {"authorization": f"Bearer {KEYS['acme']}"}
    ask = {"model": "mock-gpt", "temperature": 0, "messages": [{"role": "user", "content": "cache across flips"}]}

    def call():
        r = httpx.post(gw.url + "/v1/chat/completions", json=ask, headers=headers)
        return r.headers["x-gatewayd-cache"], int(r.headers["x-gatewayd-policy-version"])

    _, before = call()
    v = push(op, tmp_path, "policy", POLICY_V2.replace("top-secret", "cache-test"), "policy-cache.yaml")
    op.cli("activate", "policy", str(v), "--reason", "cache test")
    assert call() == ("miss", v)
    assert call() == ("hit", v)
    op.cli("rollback", "policy", "--reason", "revert cache test")
    assert call() == ("miss", before)  # never the entry made under the reverted version
    op.cli("activate", "policy", str(v), "--reason", "again")
    assert call() == ("miss", v)  # the entry made under v was purged at the revert, not kept
    op.cli("rollback", "policy", "--reason", "back")


def test_redis_restart_and_lost_notifications_are_caught_up(cluster, tmp_path, redis_server):
    op = operator(cluster)
    with Traffic(urls(cluster), KEYS["acme"], threads=3) as traffic:
        traffic.wait_for(10, after=0)
        stop_process(redis_server["proc"], sig=signal.SIGKILL)
        outage = time.time()
        traffic.wait_for(30, after=outage)  # fail static: serving goes on without the store
        _, redis_server["proc"] = start_redis(port=redis_server["port"], dir=redis_server["dir"], appendonly=True)
        back = time.time()
        traffic.wait_for(30, after=back)
    assert all(s.status == 200 for s in traffic.samples)
    # Drop every subscriber's connection the moment a flip is published: that message is lost.
    r = redis.Redis.from_url(redis_server["url"])
    _wait_until(lambda: _in_sync(op), timeout=10)
    r.config_set("client-output-buffer-limit", "pubsub 1 1 0")
    try:
        v = push(op, tmp_path, "policy", POLICY_V2.replace("top-secret", "lost-message"), "policy-lost.yaml")
        op.cli("activate", "policy", str(v), "--reason", "while notifications are lost", "--timeout", "15")
    finally:
        r.config_set("client-output-buffer-limit", "pubsub 33554432 8388608 60")
    assert _in_sync(op)
    op.cli("rollback", "policy", "--reason", "back")


def test_replica_restarted_while_redis_is_down_serves_last_known_good(cluster, redis_server):
    op = operator(cluster)
    gw = cluster[2]
    expected = op.cli("status").stdout.splitlines()[0]
    stop_process(redis_server["proc"])
    try:
        gw.stop()
        gw.start()  # no store: starts from its last-known-good state
        r = httpx.post(
            gw.url + "/v1/chat/completions",
            json={"model": "mock-gpt", "messages": [{"role": "user", "content": "offline"}]},
            headers={"authorization": f"Bearer {KEYS['acme']}"},
        )
        assert r.status_code == 200
        assert f"policy/default=v{r.headers['x-gatewayd-policy-version']}" in expected
    finally:
        _, redis_server["proc"] = start_redis(port=redis_server["port"], dir=redis_server["dir"], appendonly=True)
    _wait_until(lambda: _in_sync(op), timeout=15)
    wait_ready(gw.url + "/readyz")


def test_killed_replica_is_named_by_the_barrier(cluster, tmp_path):
    op = operator(cluster)
    victim = cluster[2]
    # Pushed first: the kill must be fresh when the activation runs, within the 3 s its
    # heartbeat stays live (a slow push in between let it age out on a loaded machine).
    v = push(op, tmp_path, "policy", POLICY_V2.replace("top-secret", "killed"), "policy-killed.yaml")
    stop_process(victim.proc, sig=signal.SIGKILL)
    victim.proc = None
    done = op.cli("activate", "policy", str(v), "--reason", "with a dead replica", "--timeout", "2", check=False)
    assert done.returncode == 1
    assert "NO ANSWER" in done.stdout and "gwC" in done.stdout
    time.sleep(3.5)  # its heartbeat ages out: it is no longer waited for
    assert "gone" in op.cli("status").stdout
    done = op.cli("rollback", "policy", "--reason", "only live replicas")
    assert "in effect: 2/2" in done.stdout


def _in_sync(gw: Gateway) -> bool:
    lines = gw.cli("status").stdout.splitlines()[1:]
    live = [line for line in lines if " gone " not in line]
    return bool(live) and all(" in sync " in line for line in live)


def _wait_until(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)
