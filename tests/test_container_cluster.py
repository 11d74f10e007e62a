"""deploy/compose.yaml brought up with podman-compose: Redis (AOF), three gateway replica
containers, the admin API and nginx. The official SDKs go through the load balancer; a
routing canary and its rollback are acknowledged by every replica container; a replica
container killed under traffic comes back on its last-known-good versions, then the current
ones, and its audit chain carries on. Everything is torn down, failure or not.

`make test-containers` runs this module and the image's (CI too); `make test` leaves them out
(marker `containers`).
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from anthropic import Anthropic
from openai import OpenAI

from support import containers
from support.compose import REPLICAS, ComposeCluster
from support.containers import podman, record
from support.gateway import ADMIN_TOKENS, KEYS
from support.mock import start_mock
from support.procs import stop_process

pytestmark = [pytest.mark.containers, pytest.mark.timeout(1500)]

NAMES = sorted(f"{r}-w0" for r in REPLICAS)  # one worker per replica container
ROUTING_V2 = """\
routes:
  - {match: "mock-*", provider: mock, model: mock-gpt-canary}
  - {match: "mock-*", provider: mock-anthropic}
models: [mock-gpt, mock-claude]
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    mock, mock_proc = start_mock()
    root = tmp_path_factory.mktemp("cluster")
    c = ComposeCluster(root, containers.gateway_image(), containers.services_image(), mock)
    try:
        started = time.monotonic()
        c.up()
        record(cluster_up_s=round(time.monotonic() - started, 1))
        yield c
    finally:
        try:
            c.down()
        finally:
            stop_process(mock_proc)


def admin(cluster: ComposeCluster, method: str, path: str, **kwargs) -> httpx.Response:
    headers = {"authorization": f"Bearer {ADMIN_TOKENS['admin']}"}
    return httpx.request(method, cluster.admin_url + path, headers=headers, timeout=30, **kwargs)


def flip(cluster: ComposeCluster, path: str, **body) -> dict:
    r = admin(cluster, "POST", path, json={"timeout_s": 10, **body})
    assert r.status_code == 200, r.text
    return r.json()


def push_routing(cluster: ComposeCluster, text: str, name: str) -> int:
    r = admin(cluster, "POST", "/v1/versions/routing", params={"name": name, "reason": "test"}, content=text.encode())
    assert r.status_code == 201, r.text
    return r.json()["id"]


def routing_version(url: str) -> str:
    r = httpx.post(
        url + "/v1/chat/completions",
        json={"model": "mock-gpt", "messages": [{"role": "user", "content": "which routing?"}]},
        headers={"authorization": f"Bearer {KEYS['acme']}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return r.headers["x-gatewayd-routing-version"]


def test_the_sdks_answer_through_the_load_balancer_from_every_replica(cluster):
    openai = OpenAI(base_url=cluster.lb_url + "/v1", api_key=KEYS["acme"])
    reply = openai.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "via nginx"}])
    assert reply.choices[0].message.content == "echo: via nginx"
    streamed = openai.chat.completions.create(
        model="mock-gpt", messages=[{"role": "user", "content": "streamed"}], stream=True
    )
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in streamed)
    claude = Anthropic(base_url=cluster.lb_url, api_key=KEYS["acme"])
    message = claude.messages.create(
        model="mock-claude", max_tokens=32, messages=[{"role": "user", "content": "via nginx too"}]
    )
    assert message.content[0].text.endswith("via nginx too")
    served_by = {httpx.get(cluster.lb_url + "/readyz").json()["replica"] for _ in range(9)}
    assert served_by == set(NAMES)


def test_a_routing_canary_and_its_rollback_are_acknowledged_by_every_replica_container(cluster):
    candidate = push_routing(cluster, ROUTING_V2, "routing-canary.yaml")
    report = flip(cluster, "/v1/canary", domain="routing", version=candidate, percent=50, reason="try canary model")
    assert report["ok"], report
    assert sorted(a["replica"] for a in report["replicas"]) == NAMES
    assert {a["state"] for a in report["replicas"]} == {"in sync"}

    openai = OpenAI(base_url=cluster.lb_url + "/v1", api_key=KEYS["acme"])
    models = set()
    for user in range(40):
        reply = openai.chat.completions.with_raw_response.create(
            model="mock-gpt", user=f"user-{user}", messages=[{"role": "user", "content": "canary?"}]
        )
        models.add((reply.headers["x-gatewayd-position"].split("routing=")[1].split(",")[0], reply.parse().model))
    assert models == {("current", "mock-gpt"), ("candidate", "mock-gpt-canary")}

    report = flip(cluster, "/v1/rollback", domain="routing", reason="back out the canary")
    assert report["ok"], report
    assert sorted(a["replica"] for a in report["replicas"]) == NAMES
    assert {a["state"] for a in report["replicas"]} == {"in sync"}
    record(rollback_last_ack_ms=report["last_ack_ms"])
    for user in range(10):
        reply = openai.chat.completions.create(
            model="mock-gpt", user=f"user-{user}", messages=[{"role": "user", "content": "after"}]
        )
        assert reply.model == "mock-gpt"


def test_a_killed_replica_container_rejoins_on_last_known_good_then_current(cluster):
    victim, victim_url = cluster.container("gateway-2"), cluster.url("gateway-2")
    redis = cluster.container("redis")
    before = routing_version(victim_url)
    statuses: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                r = client.post(
                    cluster.lb_url + "/v1/chat/completions",
                    json={"model": "mock-gpt", "messages": [{"role": "user", "content": "steady"}]},
                    headers={"authorization": f"Bearer {KEYS['acme']}"},
                )
                statuses.append(r.status_code)

    load = threading.Thread(target=traffic)
    load.start()
    try:
        time.sleep(1)
        podman("kill", victim)
        served_at_kill = len(statuses)
        time.sleep(4)  # its heartbeat ages out: the next change does not wait for it
        newer = push_routing(cluster, ROUTING_V2, "routing-while-down.yaml")
        report = flip(cluster, "/v1/activate", domain="routing", version=newer, reason="while gateway-2 is down")
        assert sorted(a["replica"] for a in report["replicas"]) == ["gateway-1-w0", "gateway-3-w0"]

        # The store hangs (a paused container: connections open, nothing answers). Not a
        # stopped one: `podman start` starts a container's dependencies, Redis included.
        podman("pause", redis)
        podman("start", victim)
        containers.wait_ready(victim, victim_url + "/readyz")
        assert routing_version(victim_url) == before  # its last-known-good versions

        podman("unpause", redis)
        deadline = time.monotonic() + 30
        while routing_version(victim_url) != str(newer):
            assert time.monotonic() < deadline, "the restarted replica never caught up with the current routing"
            time.sleep(0.2)
    finally:
        stop.set()
        load.join(30)
    assert len(statuses) > served_at_kill + 20, "traffic stopped while a replica was down"
    failed = [s for s in statuses if s != 200]
    assert len(failed) <= 2, f"{len(failed)} of {len(statuses)} requests failed: {sorted(set(failed))}"
    record(cluster_kill_requests=len(statuses), cluster_kill_failed=len(failed))

    status = admin(cluster, "GET", "/v1/status").json()
    states = {r["name"]: r["state"] for r in status["replicas"]}
    assert all(states[name] == "in sync" for name in NAMES), states

    # Its audit chain continued across the kill: one chain, intact, telling both lives, the
    # second one on last-known-good until the store answered, then on the current versions.
    verified = cluster.verify_audit()
    assert verified.returncode == 0 and "intact: 3 chain(s)" in verified.stdout, verified.stdout + verified.stderr
    records = [json.loads(line) for line in podman("exec", victim, "gatewayd", "audit", "export").splitlines() if line]
    assert {r["chain"] for r in records} == {"gateway-2-w0"}
    assert [r["seq"] for r in records] == list(range(records[0]["seq"], records[0]["seq"] + len(records)))
    events = [r.get("event") for r in records if r.get("kind") == "replica"]
    second_life = events[events.index("started", 1) :]
    assert second_life[:3] == ["started", "store_lost", "applied"] and "resynced" in second_life, events
    applied = [r["versions"]["routing/default"] for r in records if r.get("event") == "applied"]
    assert applied[-2:] == [int(before), newer]
