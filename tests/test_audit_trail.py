"""The audit trail of a running gateway (two workers, so two replica chains), signed every
0.3 s and at every change boundary: kill -9 under load, restarts, rollbacks, queries, and
proofs checked by an independent script."""

from __future__ import annotations

import datetime as dt
import json
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest

from support.audit import cli, third_party
from support.gateway import KEYS, POLICY, Gateway
from support.procs import stop_process


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock_port, fragile_port):
    root = tmp_path_factory.mktemp("trail")
    key, keyring = root / "audit.key", root / "audit.keyring"
    made = cli("audit", "keygen", "--out", str(key), "--name", "gatewayd.test/audit", "--keyring", str(keyring))
    assert made.returncode == 0, made.stderr
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GATEWAYD_AUDIT_SIGNING_KEY", str(key))
        env.setenv("GATEWAYD_AUDIT_KEYRING", str(keyring))
        env.setenv("GATEWAYD_AUDIT_CHECKPOINT_INTERVAL_S", "0.3")
        gateway = Gateway(root, mock_port, fragile_port, workers=2).start()
        gateway.vkey = made.stdout.strip()
        yield gateway
        gateway.stop()


def chat(gw: Gateway, content: str = "hello", tenant: str = "acme") -> tuple[int, str]:
    """(status, x-request-id) of one completed request."""
    body = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": content}]}).encode()
    headers = {"authorization": f"Bearer {KEYS[tenant]}", "content-type": "application/json"}
    request = urllib.request.Request(gw.url + "/v1/chat/completions", body, headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return response.status, response.headers["x-request-id"]
    except urllib.error.HTTPError as err:
        err.read()
        return err.code, err.headers["x-request-id"]


def verify(gw: Gateway) -> str:
    done = gw.cli("audit", "verify", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize("round_", [1, 2, 3])
def test_kill_9_under_load_loses_no_record_of_a_completed_response(gw, round_):
    completed: list[str] = []
    stop = threading.Event()

    def client():
        while not stop.is_set():
            try:
                completed.append(chat(gw, f"round {round_}")[1])
            except OSError:  # the gateway is gone: this request never completed
                time.sleep(0.01)

    clients = [threading.Thread(target=client) for _ in range(8)]
    for c in clients:
        c.start()
    time.sleep(1.5)
    stop_process(gw.proc, sig=signal.SIGKILL)
    gw.proc = None
    stop.set()
    for c in clients:
        c.join()
    assert len(completed) > 50, "the load never got going"

    gw.start()  # the chains reopen: torn tails cut, re-verified from their last checkpoint
    chained = {r.get("request_id") for r in gw.audit_records()}
    lost = [rid for rid in completed if rid not in chained]
    assert not lost, f"{len(lost)} of {len(completed)} completed responses have no record"
    assert "intact: 2 chain(s)" in verify(gw)


def test_a_restart_continues_each_chain(gw):
    before = {r["chain"]: r["seq"] for r in gw.audit_records()}
    gw.stop()  # graceful: `stopped` events, a last fsync and checkpoint
    gw.start()
    after = gw.audit_records()
    for chain, seq in before.items():
        mine = [r for r in after if r["chain"] == chain and r["seq"] > seq]
        events = [(r["kind"], r.get("event")) for r in mine]
        assert events[:3] == [("replica", "stopped"), ("checkpoint", None), ("replica", "started")], events
        assert [r["seq"] for r in mine] == list(range(seq + 1, seq + 1 + len(mine)))
    verify(gw)


def test_a_rollback_is_recorded_and_signed_in_one_continuous_chain(gw, tmp_path):
    """Each replica's chain holds the change records `gatewayd history` shows, the boundary
    each caused, and a checkpoint right after it; and it all still verifies."""
    policy = tmp_path / "policy-v2.yaml"
    policy.write_text(POLICY.replace("card numbers are not allowed", "no card numbers, please"))
    gw.cli("push", "policy", str(policy), "--reason", "stricter message")
    gw.cli("activate", "policy", "2", "--reason", "try v2")
    chat(gw, "under v2")
    gw.cli("rollback", "policy", "--reason", "revert v2")
    chat(gw, "after the revert")
    history = [int(line.split()[0]) for line in gw.cli("history").stdout.splitlines() if line.strip()]
    activated, reverted = history[-2:]

    time.sleep(0.5)  # one checkpoint interval, so the last requests are signed too
    records = gw.audit_records()
    for chain in {r["chain"] for r in records}:
        mine = [r for r in records if r["chain"] == chain]
        changes = [r for r in mine if r["kind"] == "change" and r["change"] in (activated, reverted)]
        assert [(r["change"], r["reason"]) for r in changes] == [(activated, "try v2"), (reverted, "revert v2")]
        applied = [r for r in mine if r.get("event") == "applied" and r["change"] in (activated, reverted)]
        assert [r["change"] for r in applied] == [activated, reverted], chain
        assert applied[0]["versions"]["policy/default"] == 2 and applied[1]["versions"]["policy/default"] == 1
        for boundary in applied:  # signed right at the boundary
            # A periodic checkpoint taken just before the boundary may be appended just after
            # it: the boundary's own is among the next ones, and covers it.
            signed = [r for r in mine if r["kind"] == "checkpoint" and r["seq"] > boundary["seq"]][:2]
            assert any(r["size"] >= boundary["seq"] for r in signed), chain
    out = verify(gw)
    assert "resolves in the registry" in out, out


def test_query_by_time_request_id_and_version(gw):
    status, rid = chat(gw, "find me")
    assert status == 200
    found = gw.cli("audit", "query", "--request-id", rid, "--json").stdout.splitlines()
    assert len(found) == 1
    record = json.loads(found[0])
    assert record["request_id"] == rid

    ts = record["ts"]
    next_us = (dt.datetime.fromisoformat(ts) + dt.timedelta(microseconds=1)).isoformat()
    window = gw.cli("audit", "query", "--from", ts, "--to", next_us, "--json").stdout.splitlines()
    assert rid in "".join(window) and all(json.loads(line)["ts"] == ts for line in window)
    assert rid not in gw.cli("audit", "export", "--from", next_us).stdout
    assert rid not in gw.cli("audit", "export", "--to", ts).stdout

    v2 = [json.loads(line) for line in gw.cli("audit", "query", "--policy-version", "2", "--json").stdout.splitlines()]
    assert v2 and all(r["policy_version"] == 2 for r in v2)
    merged = [json.loads(line)["ts"] for line in gw.cli("audit", "export").stdout.splitlines()]
    assert merged == sorted(merged), "every chain's records merged in time order"
    summary = gw.cli("audit", "query", "--request-id", rid).stdout
    assert rid in summary and "tenant=acme" in summary


def test_proofs_and_chains_verify_with_the_independent_script(gw, tmp_path):
    _, rid = chat(gw, "prove me")
    deadline = time.monotonic() + 10
    while (proved := gw.cli("audit", "prove", rid, check=False)).returncode != 0:
        assert time.monotonic() < deadline, proved.stderr
        time.sleep(0.2)
    proof = tmp_path / "inclusion.json"
    proof.write_text(proved.stdout)
    done = third_party("inclusion", str(proof), gw.vkey)
    assert done.returncode == 0, done.stdout + done.stderr
    tlog = json.loads(proved.stdout)["proofs"][0]["tlog_proof"]
    assert tlog.startswith("c2sp.org/tlog-proof@v1\nindex ")

    chain = json.loads(proved.stdout)["proofs"][0]["chain"]
    notes = sorted((gw.audit_dir / chain / "checkpoints").glob("*.note"), key=lambda p: int(p.stem))
    consistency = gw.cli("audit", "consistency", str(notes[0]), str(notes[-1])).stdout
    proof.write_text(consistency)
    done = third_party("consistency", str(proof), gw.vkey)
    assert done.returncode == 0, done.stdout + done.stderr

    for chain in sorted({r["chain"] for r in gw.audit_records()}):
        done = third_party("chain", str(gw.audit_dir), chain, gw.vkey)
        assert done.returncode == 0, done.stdout + done.stderr
