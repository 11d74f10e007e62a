"""The response-contract check (docs/ROLLBACK.md R11) through a real gateway, the real mock
provider and the real CLI and admin API: a routing promotion, or a rollback to other
upstreams, probes both positions' upstreams and is refused (nothing changed) when their
answers differ in shape; --force goes ahead and records the differences in the change."""

from __future__ import annotations

import os
import re
import subprocess

import httpx
import pytest

from support.gateway import ADMIN_TOKENS, KEYS, POLICY_V2, Gateway

# A second provider of each protocol on the same mock, answering in the altered shape.
ALTERED_PROVIDERS = """
[providers.mock-altered]
kind = "openai"
base_url = "http://127.0.0.1:{port}/v1"
api_key = "provider-secret"
headers = {{x-mock-shape = "altered"}}
[providers.mock-altered-anthropic]
kind = "anthropic"
base_url = "http://127.0.0.1:{port}"
api_key = "provider-secret"
headers = {{x-mock-shape = "altered"}}
"""

ALTERED = """\
routes:
  - {match: "mock-*", provider: mock-altered}
  - {match: "mock-*", provider: mock-altered-anthropic}
models: [mock-gpt, mock-claude]
"""

# Another version, to the same upstreams as version 1: the same contract.
SAME = """\
routes:
  - {match: "mock-*", provider: mock}
  - {match: "mock-*", provider: mock-anthropic}
models: [mock-gpt, mock-claude]
"""

DEAD = """\
routes:
  - {match: "mock-*", provider: dead}
  - {match: "mock-*", provider: mock-anthropic}
models: [mock-gpt, mock-claude]
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock_port, fragile_port):
    extra = ALTERED_PROVIDERS.format(port=mock_port)
    g = Gateway(tmp_path_factory.mktemp("contract"), mock_port, fragile_port, extra_providers=extra, admin=True)
    yield g.start()
    g.stop()


@pytest.fixture(scope="module")
def versions(gw):
    return {name: push(gw, text, f"{name}.yaml") for name, text in (("altered", ALTERED), ("same", SAME))}


def push(gw: Gateway, text: str, name: str, domain: str = "routing") -> int:
    path = gw.root / name
    path.write_text(text)
    out = gw.cli("push", domain, str(path), "--reason", f"push {name}").stdout
    return int(out.split(" version ")[1].split()[0])


def state(gw: Gateway) -> tuple[str, str]:
    """What a refused change must leave as it was: the change log and the pointers."""
    return gw.cli("history").stdout, gw.cli("status").stdout.splitlines()[0]


def refused(done: subprocess.CompletedProcess) -> tuple[str, list[str]]:
    """(the error line, the differences below it) of a refusal by the contract check."""
    assert done.returncode == 2, (done.stdout, done.stderr)
    first, *rest = done.stderr.rstrip("\n").split("\n")
    assert first.startswith("error: routing/default: the response contract differs between "), first
    assert all(line.startswith("  ") for line in rest), rest
    said = re.search(r": (\d+) differences?; nothing changed", first)
    assert said is not None, first
    count = int(said[1])
    assert count == len(rest) > 0, (first, rest)
    return first, [line.strip() for line in rest]


def last_change(gw: Gateway) -> str:
    return gw.cli("history", "routing").stdout.splitlines()[-1]


def journal(port: int) -> list[dict]:
    return httpx.get(f"http://127.0.0.1:{port}/_mock/requests", timeout=10).json()


def admin(gw: Gateway, path: str, body: dict) -> httpx.Response:
    headers = {"authorization": f"Bearer {ADMIN_TOKENS['operator']}"}
    return httpx.post(gw.admin_url + path, json=body, headers=headers, timeout=60)


def side(role: str, version: int, provider: str) -> str:
    return f"{role} v{version} (provider {provider}, model mock-gpt)"


def test_a_promotion_to_another_response_shape_is_refused_listing_the_differences(gw, versions, mock_port):
    alt = versions["altered"]
    gw.cli("canary", "routing", str(alt), "--percent", "10", "--reason", "try the altered upstreams")
    before = state(gw)
    httpx.delete(f"http://127.0.0.1:{mock_port}/_mock/requests", timeout=10)

    first, lines = refused(gw.cli("promote", "routing", "--reason", "altered looks fine", check=False))

    assert f"between current v1 and candidate v{alt}: {len(lines)} differences; nothing changed" in first
    cur, cand = side("current", 1, "mock"), side("candidate", alt, "mock-altered")
    cur_a, cand_a = side("current", 1, "mock-anthropic"), side("candidate", alt, "mock-altered-anthropic")
    for expected in (
        f"chat: {cand} lacks usage: object that {cur} sends",
        f"chat: {cand} sends choices[].message.content: array where {cur} sends string",
        f"chat-stream: {cand} lacks event chunk(delta.content) that {cur} sends",
        f"chat-stream: {cand} sends event chunk(delta.text) that {cur} does not",
        f"chat-stream: {cand} lacks event chunk(usage) that {cur} sends",
        f"messages: {cand_a} lacks usage: object that {cur_a} sends",
        f"messages-stream: {cand_a} lacks event ping that {cur_a} sends",
    ):
        assert expected in lines, "\n".join(lines)
    order = next(line for line in lines if line.startswith("messages-stream: ") and "order" in line)
    assert "message_delta > content_block_stop" in order.split(" where ")[0], order
    # Every probe went to both positions' upstreams, as the gateway would send it.
    probes = [r for r in journal(mock_port) if "Reply with the word OK." in str(r["body"])]
    altered = [r for r in probes if r["headers"].get("x-mock-shape") == "altered"]
    assert len(probes) == 8 and len(altered) == 4, probes
    assert {r["path"] for r in altered} == {"/v1/chat/completions", "/v1/messages"}
    assert all(r["headers"]["authorization" if "chat" in r["path"] else "x-api-key"] is True for r in probes)
    assert state(gw) == before  # nothing changed: no change record, the candidate still at 10 %


def test_a_forced_promotion_goes_ahead_and_records_the_differences(gw, versions):
    alt = versions["altered"]
    done = gw.cli("promote", "routing", "--force", "--reason", "altered on purpose")
    count = int(done.stdout.split("response contract: forced past ")[1].split()[0])
    assert count > 5 and f"routing/default v1 + candidate v{alt} at 10% -> v{alt}" in done.stdout, done.stdout
    line = last_change(gw)
    assert "promote" in line and f"altered on purpose [forced past {count} response-contract differences: " in line
    assert f"chat: {side('candidate', alt, 'mock-altered')} lacks usage: object" in line, line
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
        r = client.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEYS['acme']}"})
    assert r.headers["x-gatewayd-routing-version"] == str(alt) and "usage" not in r.json()
    change = int(line.split()[0])
    records = [r for r in gw.audit_records() if r.get("kind") == "change" and r.get("change") == change]
    assert records and "forced past" in records[0]["reason"] and "lacks usage: object" in records[0]["reason"]


def test_a_rollback_to_other_upstreams_is_checked_too(gw, versions):
    alt = versions["altered"]
    before = state(gw)
    first, lines = refused(gw.cli("rollback", "routing", "--reason", "back to v1", check=False))
    assert f"between current v{alt} and rollback target v1" in first
    target, cur = side("rollback target", 1, "mock"), side("current", alt, "mock-altered")
    assert f"chat: {target} sends usage: object that {cur} does not" in lines, "\n".join(lines)
    assert f"chat: {target} sends choices[].message.content: string where {cur} sends array" in lines
    assert state(gw) == before

    done = gw.cli("rollback", "routing", "--force", "--reason", "back to v1 anyway")
    assert f"routing/default v{alt} -> v1" in done.stdout, done.stdout
    assert "back to v1 anyway [forced past " in last_change(gw)


def test_a_candidate_with_the_same_shape_promotes_and_its_rollback_is_not_probed(gw, versions, mock_port):
    same = versions["same"]
    gw.cli("canary", "routing", str(same), "--percent", "50", "--reason", "same upstreams, new version")
    done = gw.cli("promote", "routing", "--reason", "same shape")
    assert (
        f"response contract: v{same} answers like v1 (chat, chat-stream, messages, messages-stream)" in done.stdout
    ), done.stdout
    assert last_change(gw).endswith("same shape")

    httpx.delete(f"http://127.0.0.1:{mock_port}/_mock/requests", timeout=10)
    done = gw.cli("rollback", "routing", "--reason", "back to v1, same upstreams")
    said = f"response contract: not checked: v1 sends every probe to the same provider and upstream model as v{same}"
    assert said in done.stdout, done.stdout
    assert journal(mock_port) == []
    assert "forced" not in last_change(gw)


def test_dropping_a_candidate_and_other_domains_are_not_probed(gw, versions, mock_port):
    httpx.delete(f"http://127.0.0.1:{mock_port}/_mock/requests", timeout=10)
    gw.cli("canary", "routing", str(versions["altered"]), "--percent", "5", "--reason", "again")
    done = gw.cli("rollback", "routing", "--reason", "drop the candidate: everyone stays on current")
    assert "response contract" not in done.stdout and done.returncode == 0
    policy = push(gw, POLICY_V2, "policy-v2.yaml", "policy")
    gw.cli("canary", "policy", str(policy), "--percent", "20", "--reason", "policy canary")
    done = gw.cli("promote", "policy", "--reason", "policies have no response contract")
    assert "response contract" not in done.stdout
    done = gw.cli("rollback", "policy", "--reason", "and back")
    assert "response contract" not in done.stdout
    assert journal(mock_port) == []


def test_a_probe_that_fails_is_a_difference_naming_the_error(gw):
    dead = push(gw, DEAD, "dead.yaml")
    gw.cli("canary", "routing", str(dead), "--percent", "1", "--reason", "a provider that is down")
    before = state(gw)
    first, lines = refused(gw.cli("promote", "routing", "--reason", "promote a dead one", check=False))
    assert len(lines) == 2, lines  # chat and chat-stream go to the dead provider; messages do not
    for probe in ("chat", "chat-stream"):
        line = next(x for x in lines if x.startswith(f"{probe}: "))
        assert line.startswith(f"{probe}: {side('candidate', dead, 'dead')} failed: unreachable: "), line
        assert "cannot connect" in line
    assert state(gw) == before

    # [contract] probes picks a subset (here through its environment override).
    env = {**os.environ, "GATEWAYD_CONTRACT_PROBES": '["chat-stream", "messages"]'}
    argv = gw.cli_argv("promote", "routing", "--reason", "only two probes")
    _, lines = refused(subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env))
    assert [x.split(":")[0] for x in lines] == ["chat-stream"]
    assert state(gw) == before
    gw.cli("rollback", "routing", "--reason", "drop the dead candidate")


def test_a_candidate_that_no_longer_routes_a_probe_model_is_refused_naming_it(gw):
    # Pinned to its protocol: else chat requests would reach it translated (issue 14).
    messages_only = push(
        gw, 'routes:\n  - {match: "mock-*", provider: mock-anthropic, translate: false}\n', "messages-only.yaml"
    )
    gw.cli("canary", "routing", str(messages_only), "--percent", "1", "--reason", "chat dropped by mistake")
    before = state(gw)
    _, lines = refused(gw.cli("promote", "routing", "--reason", "drop chat", check=False))
    assert lines == [
        f"{probe}: candidate v{messages_only} does not route model mock-gpt for the chat API, "
        f"which {side('current', 1, 'mock')} serves"
        for probe in ("chat", "chat-stream")
    ]
    assert state(gw) == before
    gw.cli("rollback", "routing", "--reason", "drop the candidate")


def test_a_route_scope_is_probed_with_its_api_only(gw, versions):
    alt = versions["altered"]
    gw.cli("activate", "routing", "1", "--scope", "route:messages", "--reason", "a scope of its own")
    gw.cli("canary", "routing", str(alt), "--scope", "route:messages", "--percent", "5", "--reason", "messages only")
    done = gw.cli("promote", "routing", "--scope", "route:messages", "--reason", "scoped", check=False)
    assert done.returncode == 2 and "error: routing/route:messages: the response contract differs" in done.stderr
    lines = [line.strip() for line in done.stderr.splitlines()[1:]]
    assert {line.split(":")[0] for line in lines} == {"messages", "messages-stream"}, lines
    gw.cli("rollback", "routing", "--scope", "route:messages", "--reason", "drop the candidate")
    gw.cli("rollback", "routing", "--scope", "route:messages", "--reason", "back to the default scope")


def test_the_admin_api_refuses_with_409_and_takes_force(gw, versions):
    alt = versions["altered"]
    gw.cli("canary", "routing", str(alt), "--percent", "10", "--reason", "through the admin API")
    before = state(gw)
    r = admin(gw, "/v1/promote", {"domain": "routing", "reason": "via the API"})
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "contract_mismatch"
    assert error["message"].startswith(
        f"routing/default: the response contract differs between current v1 and candidate v{alt}: "
    )
    assert f"; chat: {side('candidate', alt, 'mock-altered')} lacks usage: object" in error["message"]
    assert "\n" not in error["message"]
    assert state(gw) == before

    r = admin(gw, "/v1/promote", {"domain": "routing", "reason": "via the API, forced", "force": True})
    assert r.status_code == 200 and r.json()["ok"], r.text
    assert "via the API, forced [forced past " in last_change(gw)

    before = state(gw)
    r = admin(gw, "/v1/rollback", {"domain": "routing", "reason": "back via the API"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "contract_mismatch", r.text
    assert state(gw) == before
    r = admin(gw, "/v1/rollback", {"domain": "routing", "reason": "back, forced", "force": True})
    assert r.status_code == 200, r.text
    assert "back, forced [forced past " in last_change(gw)
    bad = admin(gw, "/v1/promote", {"domain": "routing", "reason": "x", "force": "yes"})
    assert bad.status_code == 400 and "force" in bad.json()["error"]["message"]
