"""`rate_limit.scope: cluster`: the limit is the deployment's, each live replica enforcing
an even share, and a replica that leaves gives its share back (two gateways, one Redis)."""

from __future__ import annotations

import time

import httpx
import pytest

from support.gateway import KEYS, Gateway
from support.procs import stop_process
from support.redis import start_redis

# 120/min is 2 tokens a second for the whole deployment, 1 a second per replica while there
# are two: a burst of 8 requests within a second refills at most one token, so what passes
# is the bucket's size.
LIMITED = """\
upstream_timeout_s: 5
cache: {enabled: false}
rate_limit: {requests_per_minute: 120, burst: 6, scope: cluster}
"""


@pytest.fixture
def pair(tmp_path, mock_port, fragile_port):
    url, redis = start_redis()
    gateways = []
    try:
        for name in ("rlA", "rlB"):
            (tmp_path / name).mkdir()
            gateways.append(Gateway(tmp_path / name, mock_port, fragile_port, redis_url=url, prefix=name).start())
        yield gateways
    finally:
        for gw in gateways:
            gw.stop()
        stop_process(redis)


def burst(gw: Gateway, n: int) -> int:
    """How many of n back-to-back requests were let through."""
    headers = {"authorization": f"Bearer {KEYS['acme']}"}
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "count me"}]}
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        statuses = [client.post("/v1/chat/completions", json=body, headers=headers).status_code for _ in range(n)]
    assert set(statuses) <= {200, 429}, statuses
    return statuses.count(200)


def live_replicas(gw: Gateway) -> int:
    return httpx.get(gw.url + "/readyz", timeout=5).json()["live_replicas"]


def wait_for(predicate, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_cluster_limit_is_shared_by_the_live_replicas(pair, tmp_path):
    first, second = pair
    doc = tmp_path / "limited.yaml"
    doc.write_text(LIMITED)
    version = first.cli("push", "config", str(doc), "--reason", "shared limit").stdout.split(" version ")[1].split()[0]
    first.cli("activate", "config", version, "--reason", "shared limit")
    wait_for(lambda: live_replicas(first) == 2)

    assert burst(first, 8) in (3, 4)  # a half share of 6, plus at most one refilled token

    second.stop()
    wait_for(lambda: live_replicas(first) == 1)
    time.sleep(3.5)  # at 2 tokens a second the bucket refills to its new size, 6
    assert burst(first, 8) >= 6  # the whole limit, now that it is the only replica
