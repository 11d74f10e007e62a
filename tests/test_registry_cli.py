"""The operator CLI on the embedded store: immutable versions, history, point-in-time
answers, and bad input answered in one line with nothing changed."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import time

import httpx
import pytest

from support.gateway import KEYS, Gateway

POLICY = "default: allow\nrules:\n  - {id: r%d, when: {prompt: {keywords: [k%d]}}, action: deny}\n"


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock_port, fragile_port):
    g = Gateway(tmp_path_factory.mktemp("reg"), mock_port, fragile_port).start()
    yield g
    g.stop()


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")


def snapshot(gw: Gateway) -> tuple[str, str]:
    """Everything an operator can see of the registry: must not move on a refused call."""
    return gw.cli("history").stdout, gw.cli("status").stdout.splitlines()[0]


def test_show_returns_the_pushed_bytes_exactly(gw, tmp_path):
    original = b"# a comment that YAML would drop\ndefault: allow\nrules: []\n"
    (tmp_path / "p.yaml").write_bytes(original)
    out = gw.cli("push", "policy", str(tmp_path / "p.yaml"), "--reason", "bytes").stdout
    version = out.split(" version ")[1].split()[0]
    shown = gw.cli("show", "policy", version)
    assert shown.stdout.encode() == original


def test_at_answers_across_several_flips(gw, tmp_path):
    marks = []
    for i in range(3):
        (tmp_path / f"p{i}.yaml").write_text(POLICY % (i, i))
        out = gw.cli("push", "policy", str(tmp_path / f"p{i}.yaml"), "--reason", f"v{i}").stdout
        version = int(out.split(" version ")[1].split()[0])
        gw.cli("activate", "policy", str(version), "--reason", f"step {i}")
        time.sleep(0.05)
        marks.append((time.time(), version))
        time.sleep(0.05)
    gw.cli("rollback", "policy", "--reason", "undo last")
    time.sleep(0.05)
    after_rollback = time.time()
    for t, version in marks:
        out = gw.cli("at", iso(t)).stdout
        assert f"policy/default: version {version} " in out, out
        assert "acknowledged by 1 replica(s)" in out
    out = gw.cli("at", iso(after_rollback)).stdout
    assert f"policy/default: version {marks[1][1]} " in out
    assert "nothing was in effect" in gw.cli("at", "2000-01-01T00:00:00Z").stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("push", "policy", "{doc}", "--reason", "bad regex"), "rules[0].when.prompt.regex[0]"),
        (("push", "policy", "{missing}", "--reason", "no file"), "No such file"),
        (("push", "routing", "{routing}", "--reason", "unknown provider"), 'unknown provider "nowhere"'),
        (("push", "config", "{runtime}", "--reason", "bad scope"), "rate_limit.scope: must be one of replica, cluster"),
        (("push", "secrets", "{doc}", "--reason", "x"), "invalid choice: 'secrets'"),
        (("activate", "policy", "999", "--reason", "x"), "policy version 999 does not exist"),
        (("activate", "policy", "1", "--reason", ""), "a reason is required"),
        (("activate", "policy", "1"), "the following arguments are required: --reason"),
        (("rollback", "config", "--reason", "x"), "config/default has no previous version"),
        (("at", "yesterday-ish"), "not an ISO 8601 time"),
        (("show", "policy", "abc"), "invalid int value: 'abc'"),
    ],
)
def test_bad_documents_and_calls_get_one_line_and_change_nothing(gw, tmp_path, args, message):
    (tmp_path / "bad.yaml").write_text(
        "rules:\n  - id: x\n    when: {prompt: {regex: ['(unclosed']}}\n    action: deny\n"
    )
    (tmp_path / "routing.yaml").write_text("routes:\n  - {match: '*', provider: nowhere}\n")
    (tmp_path / "runtime.yaml").write_text("rate_limit: {requests_per_minute: 60, scope: global}\n")
    files = {"doc": "bad.yaml", "missing": "nope.yaml", "routing": "routing.yaml", "runtime": "runtime.yaml"}
    argv = [a.format(**{k: tmp_path / f for k, f in files.items()}) for a in args]
    before = snapshot(gw)
    done = gw.cli(*argv, check=False)
    assert done.returncode == 2, done
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr
    assert snapshot(gw) == before


def test_bad_config_file_is_named(tmp_path):
    path = tmp_path / "gatewayd.toml"
    path.write_text('[server]\nport = "eighty"\n[providers.x]\nkind = "openai"\nbase_url = "http://h/v1"\n')
    done = subprocess.run(
        [sys.executable, "-m", "gatewayd.cli", "--config", str(path), "status"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert str(path) in done.stderr and "$.server.port" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def _pointers(gw: Gateway) -> dict[str, int]:
    """`gatewayd status`'s first line, e.g. `active: config/default=v1, policy/default=v3 (change 9)`."""
    return {k: int(v) for k, v in re.findall(r"([\w]+/[\w:]+)=v(\d+)", gw.cli("status").stdout.splitlines()[0])}


def _chat(gw: Gateway, key: str, text: str) -> httpx.Response:
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": text}]}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})


def test_kill_switch_denies_one_tenant_and_releases_it(gw):
    done = gw.cli("killswitch", "on", "--scope", "tenant:acme", "--reason", "incident 42")
    assert "in effect: 1/1" in done.stdout
    r = _chat(gw, KEYS["acme"], "hello")
    assert r.status_code == 403 and "kill switch" in r.json()["error"]["message"]
    assert _chat(gw, KEYS["free"], "hello").status_code == 200  # other tenants unaffected
    gw.cli("killswitch", "off", "--scope", "tenant:acme", "--reason", "incident over")
    assert _chat(gw, KEYS["acme"], "hello").status_code == 200
    assert "killswitch" not in gw.cli("history").stdout or "incident over" in gw.cli("history").stdout


def test_shadow_policy_is_recorded_and_counted_not_enforced(gw, tmp_path):
    (tmp_path / "strict.yaml").write_text("default: deny\nrules: []\n")
    out = gw.cli("push", "policy", str(tmp_path / "strict.yaml"), "--reason", "candidate").stdout
    version = int(out.split(" version ")[1].split()[0])
    gw.cli("shadow", str(version), "--reason", "try the strict candidate")
    r = _chat(gw, KEYS["acme"], "shadowed request")
    assert r.status_code == 200  # not enforced
    request_id = r.headers["x-request-id"]
    record = [x for x in gw.audit_records() if x.get("request_id") == request_id][0]
    assert record["shadow"]["version"] == version and record["shadow"]["decision"] == "deny"
    metrics = httpx.get(gw.url + "/metrics").text
    assert "gatewayd_shadow_decisions_total{" in metrics and f'shadow_version="{version}"' in metrics
    gw.cli("shadow", "off", "--reason", "seen enough")
    r = _chat(gw, KEYS["acme"], "after shadow")
    record = [x for x in gw.audit_records() if x.get("request_id") == r.headers["x-request-id"]][0]
    assert record["shadow"] is None


def test_bundle_flips_all_domains_in_one_change_and_back(gw, tmp_path):
    before = _pointers(gw)
    (tmp_path / "routing.yaml").write_text("routes:\n  - {match: 'mock-*', provider: mock}\nmodels: [mock-gpt]\n")
    (tmp_path / "runtime.yaml").write_text("upstream_timeout_s: 30\n")
    ids = {}
    for domain, name in (("routing", "routing.yaml"), ("config", "runtime.yaml")):
        out = gw.cli("push", domain, str(tmp_path / name), "--reason", "bundle part").stdout
        ids[domain] = int(out.split(" version ")[1].split()[0])
    policy = int(_chat(gw, KEYS["acme"], "x").headers["x-gatewayd-policy-version"])
    (tmp_path / "bundle.yaml").write_text(f"policy: {policy}\nrouting: {ids['routing']}\nconfig: {ids['config']}\n")
    done = gw.cli("bundle", "activate", str(tmp_path / "bundle.yaml"), "--reason", "release 7")
    assert "in effect: 1/1" in done.stdout
    r = _chat(gw, KEYS["acme"], "bundled")
    assert r.headers["x-gatewayd-routing-version"] == str(ids["routing"])
    assert r.headers["x-gatewayd-config-version"] == str(ids["config"])
    change_line = [line for line in gw.cli("history").stdout.splitlines() if "release 7" in line][0]
    assert "routing/default" in change_line and "config/default" in change_line  # one change, both pointers
    gw.cli("bundle", "rollback", "--reason", "release 7 is bad")
    after = _pointers(gw)
    assert after["routing/default"] == before["routing/default"]
    assert after["config/default"] == before["config/default"]


def test_metrics_follow_the_revert(gw, tmp_path):
    (tmp_path / "m.yaml").write_text("default: allow\nrules: []\n")
    out = gw.cli("push", "policy", str(tmp_path / "m.yaml"), "--reason", "metrics").stdout
    version = int(out.split(" version ")[1].split()[0])
    gw.cli("activate", "policy", str(version), "--reason", "metrics on")
    for _ in range(3):
        assert _chat(gw, KEYS["acme"], "counted").status_code == 200
    gw.cli("rollback", "policy", "--reason", "metrics off")
    previous = int(_chat(gw, KEYS["acme"], "after").headers["x-gatewayd-policy-version"])
    text = httpx.get(gw.url + "/metrics").text
    served = [line for line in text.splitlines() if line.startswith("gatewayd_requests_total{")]
    assert any(f'policy_version="{version}"' in line and line.endswith(" 3") for line in served), served
    assert any(f'policy_version="{previous}"' in line for line in served)
    current = [line for line in text.splitlines() if line.startswith("gatewayd_replica_versions{")]
    assert any('domain="policy",scope="default"' in line and f'version="{previous}"' in line for line in current)


def test_route_scope_overrides_default_and_tenant_scope_overrides_route(gw, tmp_path):
    (tmp_path / "no-embeddings.yaml").write_text("default: deny\nrules: []\n")
    out = gw.cli("push", "policy", str(tmp_path / "no-embeddings.yaml"), "--reason", "route scope").stdout
    version = out.split(" version ")[1].split()[0]
    gw.cli("activate", "policy", version, "--scope", "route:embeddings", "--reason", "no embeddings")
    headers = {"authorization": f"Bearer {KEYS['acme']}"}
    r = httpx.post(gw.url + "/v1/embeddings", json={"model": "mock-gpt", "input": "x"}, headers=headers)
    assert r.status_code == 403 and r.headers["x-gatewayd-policy-version"] == version
    assert _chat(gw, KEYS["acme"], "chat is unaffected").status_code == 200
    gw.cli("rollback", "policy", "--scope", "route:embeddings", "--to", _default_policy(gw), "--reason", "allow again")
    r = httpx.post(gw.url + "/v1/embeddings", json={"model": "mock-gpt", "input": "x"}, headers=headers)
    assert r.status_code == 200


def _default_policy(gw: Gateway) -> str:
    return str(_pointers(gw)["policy/default"])


def test_change_records_in_the_chain_match_history(gw):
    history = gw.cli("history").stdout.splitlines()
    ids = {int(line.split()[0]) for line in history}
    recorded = {}
    for r in gw.audit_records():
        if r.get("kind") == "change":
            recorded[r["change"]] = r
    assert ids <= set(recorded), ids - set(recorded)
    for line in history:
        change = recorded[int(line.split()[0])]
        assert f"by {change['actor']}: {change['reason']}" in line


def test_rate_limit_is_versioned_config_and_rolls_back(gw, tmp_path):
    (tmp_path / "limited.yaml").write_text("rate_limit: {requests_per_minute: 60, burst: 2}\n")
    out = gw.cli("push", "config", str(tmp_path / "limited.yaml"), "--reason", "limit").stdout
    gw.cli("activate", "config", out.split(" version ")[1].split()[0], "--reason", "protect upstream")
    statuses = [_chat(gw, KEYS["free"], "limited") for _ in range(3)]
    assert [r.status_code for r in statuses[:2]] == [200, 200]
    assert statuses[2].status_code == 429 and statuses[2].json()["error"]["code"] == "rate_limit_exceeded"
    assert int(statuses[2].headers["retry-after"]) >= 1
    assert _chat(gw, KEYS["acme"], "other tenant").status_code == 200  # buckets are per tenant
    gw.cli("rollback", "config", "--reason", "lift the limit")
    assert all(_chat(gw, KEYS["free"], "unlimited").status_code == 200 for _ in range(3))


def test_a_rule_on_a_request_header_sees_that_header(gw, tmp_path):
    (tmp_path / "teams.yaml").write_text(
        "default: allow\nrules:\n"
        "  - id: red-team-paused\n    when: {headers: {x-team: [red]}}\n    action: deny\n    message: paused\n"
    )
    out = gw.cli("push", "policy", str(tmp_path / "teams.yaml"), "--reason", "pause red").stdout
    gw.cli("activate", "policy", out.split(" version ")[1].split()[0], "--reason", "pause red")
    try:
        body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hello"}]}
        auth = {"authorization": f"Bearer {KEYS['acme']}"}
        red = httpx.post(gw.url + "/v1/chat/completions", json=body, headers={**auth, "x-team": "red"})
        blue = httpx.post(gw.url + "/v1/chat/completions", json=body, headers={**auth, "x-team": "blue"})
    finally:
        gw.cli("rollback", "policy", "--reason", "unpause red")
    assert red.status_code == 403 and "red-team-paused" in red.json()["error"]["message"]
    assert blue.status_code == 200
