"""Automatic revert of a canary (docs/ROLLBACK.md R13) with real processes: a candidate
routed to a provider that fails is held at 0 % by actor `auto`, through the barrier, with
the rule and the figures in the change record; rules are refused for policy unless allowed."""

from __future__ import annotations

import time

import httpx
import pytest

from support.gateway import KEYS, ROUTING, Gateway

BROKEN = """
[providers.broken]
kind = "openai"
base_url = "{mock}/v1"
api_key = "provider-secret"
headers = {{x-mock-status = "500"}}
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock_port, fragile_port):
    extra = BROKEN.format(mock=f"http://127.0.0.1:{mock_port}")
    g = Gateway(tmp_path_factory.mktemp("auto"), mock_port, fragile_port, workers=2, extra_providers=extra).start()
    yield g
    g.stop()


def push(gw: Gateway, domain: str, text: str, name: str) -> int:
    (gw.root / name).write_text(text)
    out = gw.cli("push", domain, str(gw.root / name), "--reason", f"push {name}").stdout
    return int(out.split(" version ")[1].split()[0])


def auto_changes(gw: Gateway) -> list[str]:
    return [
        line for line in gw.cli("history", "routing").stdout.splitlines() if line.endswith("") and " by auto: " in line
    ]


def test_a_failing_candidate_is_held_at_zero_by_auto_through_the_barrier(gw):
    broken = push(gw, "routing", ROUTING.replace("provider: mock}", "provider: broken}", 1), "broken.yaml")
    gw.cli(
        "canary", "routing", str(broken), "--percent", "50", "--revert-if", "error_rate > 0.2",
        "--revert-if", "p99_ms > 100 * current", "--min-requests", "20", "--window", "30", "--reason", "try broken",
    )  # fmt: skip
    assert "(revert if error_rate > 0.2 or p99_ms > 100 * current)" in gw.cli("status").stdout
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
    statuses: list[int] = []
    started = time.monotonic()
    with httpx.Client(base_url=gw.url, timeout=10, headers={"authorization": f"Bearer {KEYS['acme']}"}) as client:
        n = 0
        while not auto_changes(gw):
            assert time.monotonic() - started < 60, "no automatic revert within 60 s"
            for _ in range(20):
                n += 1
                statuses.append(client.post("/v1/chat/completions", json={**body, "user": f"u{n}"}).status_code)
        assert 500 in statuses and 200 in statuses  # the candidate did fail, the current did not
        [line] = auto_changes(gw)
        assert "canary" in line and f"v1 + candidate v{broken} at 50%" in line and "at 0%" in line, line
        assert "automatic revert: 'error_rate > 0.2' held (error_rate 1 on the candidate" in line, line
        change = int(line.split()[0])
        deadline = time.monotonic() + 10
        while len([r for r in gw.audit_records() if r.get("event") == "applied" and r.get("change") == change]) < 2:
            assert time.monotonic() < deadline, "not every replica applied the automatic revert"
            time.sleep(0.2)
        after = [client.post("/v1/chat/completions", json={**body, "user": f"v{i}"}) for i in range(40)]
    assert all(r.status_code == 200 and r.headers["x-gatewayd-routing-version"] == "1" for r in after)
    assert f"candidate v{broken} at 0%" in gw.cli("status").stdout
    gw.cli("rollback", "routing", "--reason", "drop the broken candidate")


def test_rules_are_checked_and_refused_for_policy_unless_allowed(gw):
    before = gw.cli("history").stdout
    candidate = push(gw, "routing", ROUTING, "fine.yaml")
    policy = push(gw, "policy", "default: allow\nrules: []\n", "allow-all.yaml")
    for args, said in (
        (("routing", str(candidate), "--percent", "5", "--revert-if", "errors > 1"), "expected METRIC OP NUMBER"),
        (("routing", str(candidate), "--percent", "5", "--revert-if", "p95_ms > x"), "expected METRIC OP NUMBER"),
        (("routing", str(candidate), "--percent", "5", "--min-requests", "5"), "go with --revert-if"),
        (("policy", str(policy), "--percent", "5", "--revert-if", "error_rate > 0.1"), "--allow-policy-revert"),
    ):
        done = gw.cli("canary", *args, "--reason", "bad", check=False)
        assert done.returncode == 2 and said in done.stderr and len(done.stderr.strip().splitlines()) == 1, done
    assert gw.cli("history").stdout.count("\n") == before.count("\n")
