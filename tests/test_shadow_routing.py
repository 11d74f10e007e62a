"""A routing candidate run as a shadow (docs/ROLLBACK.md R13), with real processes: the
share's requests are answered by the current routing as ever and copied to the candidate's
upstream, whose status, latency and shape are recorded in the audit chain and counted in
/metrics, and never reach a client."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from support.gateway import KEYS, ROUTING, Gateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock_port, fragile_port):
    g = Gateway(tmp_path_factory.mktemp("shadow"), mock_port, fragile_port, workers=2).start()
    yield g
    g.stop()


def push(gw: Gateway, text: str, name: str) -> int:
    (gw.root / name).write_text(text)
    out = gw.cli("push", "routing", str(gw.root / name), "--reason", f"push {name}").stdout
    return int(out.split(" version ")[1].split()[0])


def send(gw: Gateway, users: list[str]) -> list[httpx.Response]:
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=gw.url, timeout=10, headers={"authorization": f"Bearer {KEYS['acme']}"}) as client:
        return [client.post("/v1/chat/completions", json={**body, "user": u}) for u in users]


def shadow_records(gw: Gateway, version: int, want: int) -> list[dict]:
    """The shadow_routing events of `version`, once there are `want` of them (copies run
    after the answer, in the background)."""
    deadline = time.monotonic() + 15
    while True:
        found = [r for r in gw.audit_records() if r.get("kind") == "shadow_routing" and r["routing_version"] == version]
        if len(found) >= want or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def metric_sum(gw: Gateway, name: str, **labels: str) -> float:
    total = 0.0
    for line in httpx.get(gw.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_shadow_gets_copies_that_never_reach_the_client(gw):
    failing = push(gw, ROUTING.replace("provider: mock}", "provider: ratelimited}", 1), "shadow-429.yaml")
    out = gw.cli("canary", "routing", str(failing), "--percent", "100", "--shadow", "--reason", "measure B").stdout
    assert f"v1 -> v1 + shadow v{failing} at 100%" in out
    answers = send(gw, [f"u{n}" for n in range(20)])
    assert all(r.status_code == 200 for r in answers)
    assert {r.headers["x-gatewayd-routing-version"] for r in answers} == {"1"}
    assert {r.headers["x-gatewayd-position"] for r in answers} == {"policy=current, routing=current, config=current"}
    records = shadow_records(gw, failing, 20)
    assert len(records) == 20 and {r["status"] for r in records} == {429} and {r["shape"] for r in records} == {"-"}
    ids = {r.headers["x-request-id"] for r in answers}
    assert {r["request_id"] for r in records} == ids
    assert all(r["upstream"] == "ratelimited" and r["latency_us"] > 0 for r in records)
    time.sleep(1.5)  # the metrics files are rewritten every second
    assert metric_sum(gw, "gatewayd_shadow_routing_requests_total", routing_version=str(failing), status="429") == 20
    metrics = httpx.get(gw.url + "/metrics", timeout=10).text
    assert re.search(rf'gatewayd_replica_versions{{[^}}]*position="shadow",version="{failing}"', metrics), metrics
    gw.cli("rollback", "routing", "--reason", "enough")
    send(gw, ["after-1", "after-2"])
    time.sleep(1)
    assert len(shadow_records(gw, failing, 21)) == 20


def test_a_shadow_at_a_share_copies_only_its_callers_and_compares_shapes(gw):
    same = push(gw, ROUTING, "shadow-same.yaml")
    gw.cli("canary", "routing", str(same), "--percent", "50", "--shadow", "--reason", "half")
    users = [f"s{n}" for n in range(200)]
    send(gw, users)
    records = shadow_records(gw, same, 100)
    assert 60 <= len(records) <= 140, len(records)  # about half, by sticky bucket
    assert {r["status"] for r in records} == {200} and {r["shape"] for r in records} == {"same"}
    gw.cli("rollback", "routing", "--reason", "enough")


def test_a_shadow_is_routing_only_and_takes_no_revert_rules(gw):
    candidate = push(gw, ROUTING, "shadow-refused.yaml")
    for args, said in (
        (("policy", "1", "--percent", "5", "--shadow"), "only a routing candidate"),
        (("routing", str(candidate), "--percent", "5", "--shadow", "--revert-if", "error_rate > 0.1"), "serves nobody"),
    ):
        done = gw.cli("canary", *args, "--reason", "no", check=False)
        assert done.returncode == 2 and said in done.stderr, done
