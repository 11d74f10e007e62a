"""A control store that lost its data never gets a used version number again (docs/ROLLBACK.md
R17): real redis-server, real `gatewayd serve` with two replicas, the CLI as operators run it.

Each test wipes the store under a running gateway (FLUSHALL, a restart without
persistence, another store's data, a deleted SQLite file) and checks that pushes and flips
are refused with one line saying what was lost and nothing is written, that `status` says
so, that replicas keep serving what they served and acknowledge nothing, and that a restore
brings the numbers back, each naming the document it always named.
"""

from __future__ import annotations

import signal
import time
import uuid

import httpx
import pytest
import redis

from gatewayd.control.model import ChangeItem, StoreDump, StoreIdentity
from gatewayd.control.redis_store import RedisStore
from support.gateway import KEYS, POLICY, POLICY_V2, Gateway
from support.procs import stop_process
from support.redis import start_redis

POLICY_V3 = POLICY_V2.replace("top-secret", "classified")
OTHER_POLICY = "default: deny\nrules: []\n"
HISTORY_KEYS = ("identity", "changes", "pointers", "version-id:policy", "versions:policy", "documents:policy")


@pytest.fixture
def redis_server():
    server = {}
    server["url"], server["proc"] = start_redis()
    server["port"] = int(server["url"].rsplit(":", 1)[1].split("/")[0])
    yield server
    stop_process(server["proc"])


@pytest.fixture
def gateway(tmp_path, mock_port, fragile_port, redis_server):
    (tmp_path / "gw").mkdir()
    gw = Gateway(tmp_path / "gw", mock_port, fragile_port, workers=2, redis_url=redis_server["url"])
    yield gw.start()
    gw.stop()


def ask(gw: Gateway, content: str = "hello") -> httpx.Response:
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": content}]}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEYS['acme']}"})


def served_policies(gw: Gateway, requests: int = 12) -> set[str]:
    return {ask(gw, f"which policy {i}").headers["x-gatewayd-policy-version"] for i in range(requests)}


def push(gw: Gateway, text: str, name: str, check: bool = True):
    path = gw.root / name
    path.write_text(text)
    return gw.cli("push", "policy", str(path), "--reason", f"push {name}", check=check)


def activate_v2(gw: Gateway) -> None:
    assert served_policies(gw, 4) == {"1"}  # audit records name policy v1
    assert "policy version 2 " in push(gw, POLICY_V2, "policy-v2.yaml").stdout
    assert "in effect: 2/2" in gw.cli("activate", "policy", "2", "--reason", "tighten").stdout
    assert served_policies(gw) == {"2"}


def history_keys(url: str) -> list[bytes]:
    client = redis.Redis.from_url(url)
    try:
        return [k for k in HISTORY_KEYS if client.exists(f"gatewayd:{k}")]
    finally:
        client.close()


def wait_for_holding_replicas(gw: Gateway, count: int = 2, timeout: float = 30) -> None:
    """Until every replica wrote its `store_lost_data` event: each has seen the loss."""
    deadline = time.monotonic() + timeout
    while sum(r.get("event") == "store_lost_data" for r in gw.audit_records()) < count:
        if time.monotonic() > deadline:
            raise AssertionError("the replicas never noticed that the store lost its data")
        time.sleep(0.2)


def wait_for_heartbeats(client: redis.Redis, count: int = 2, timeout: float = 30) -> None:
    """Until the replicas heartbeat into the emptied store again, so a restore waits for them."""
    deadline = time.monotonic() + timeout
    while client.hlen("gatewayd:replicas") < count:
        if time.monotonic() > deadline:
            raise AssertionError("the replicas never heartbeated into the emptied store")
        time.sleep(0.1)


def assert_refused(gw: Gateway, what: str) -> None:
    """Push, activate and rollback each refused with one line naming the loss."""
    for args, action in (
        (None, "push"),
        (("activate", "policy", "1", "--reason", "after the loss"), "flip pointers"),
        (("rollback", "policy", "--reason", "after the loss"), "flip pointers"),
    ):
        done = push(gw, OTHER_POLICY, "unrelated.yaml", check=False) if args is None else gw.cli(*args, check=False)
        assert done.returncode == 2, done
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert what in lines[0] and f"refusing to {action}. Restore it: gatewayd store restore" in lines[0], lines[0]


def assert_status_reports(gw: Gateway, what: str) -> None:
    done = gw.cli("status", check=False)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0].startswith("store LOST: control store at redis://") and what in lines[0], lines[0]
    replicas = lines[1:]
    assert len(replicas) == 2 and all(" static " in line and "policy/default=v2" in line for line in replicas), lines


def assert_restored(gw: Gateway) -> None:
    """The old numbers name their old documents, audit records resolve, new ones carry on."""
    assert gw.cli("show", "policy", "1").stdout == POLICY
    assert gw.cli("show", "policy", "2").stdout == POLICY_V2
    documents = {"1": POLICY, "2": POLICY_V2}
    versions = {str(r["policy_version"]) for r in gw.audit_records() if r.get("kind") == "request"}
    assert versions == {"1", "2"}
    for version in versions:
        assert gw.cli("show", "policy", version).stdout == documents[version]
    status = gw.cli("status").stdout.splitlines()
    assert status[0].startswith("active: ") and "policy/default=v2" in status[0], status
    assert all(" in sync " in line for line in status[1:]), status
    assert served_policies(gw) == {"2"}
    pushed = push(gw, POLICY_V3, "policy-v3.yaml").stdout
    assert "policy version 3 " in pushed, pushed
    assert "in effect: 2/2" in gw.cli("activate", "policy", "3", "--reason", "after the restore").stdout
    assert served_policies(gw) == {"3"}


def test_flushall_is_refused_replicas_hold_and_a_restore_from_last_known_good_carries_on(gateway, redis_server):
    activate_v2(gateway)
    redis.Redis.from_url(redis_server["url"]).flushall()
    wait_for_holding_replicas(gateway)

    lost = "has lost its data: epoch "
    assert_refused(gateway, lost)
    assert history_keys(redis_server["url"]) == []  # nothing written: no identity, version or change
    assert_status_reports(gateway, lost)
    assert served_policies(gateway) == {"2"}

    done = gateway.cli("store", "restore")
    assert "restored control store" in done.stdout and "in effect: 2/2" in done.stdout, done.stdout
    assert_restored(gateway)


def test_redis_restarted_empty_and_gateway_restarted_is_never_bootstrapped_again(gateway, redis_server, tmp_path):
    activate_v2(gateway)
    backup = tmp_path / "backup.json"
    gateway.cli("store", "export", str(backup))
    push(gateway, POLICY_V3, "policy-v3.yaml")  # after the backup, never activated: in no file
    stop_process(redis_server["proc"], sig=signal.SIGKILL)
    _, redis_server["proc"] = start_redis(port=redis_server["port"])  # no persistence: empty
    gateway.stop()
    gateway.start()  # bootstrap must not seed the empty store; replicas start from last-known-good
    assert served_policies(gateway) == {"2"}
    assert history_keys(redis_server["url"]) == []
    assert_refused(gateway, "policy up to 3")

    done = gateway.cli("store", "restore", "--backup", str(backup))
    assert "not recovered: policy versions 3 " in done.stdout and "in effect: 2/2" in done.stdout, done.stdout
    assert gateway.cli("show", "policy", "3", check=False).returncode == 2  # lost, never reused
    assert "policy version 4 " in push(gateway, OTHER_POLICY, "after.yaml").stdout
    assert gateway.cli("show", "policy", "2").stdout == POLICY_V2
    assert gateway.cli("show", "policy", "1").stdout == POLICY
    history = gateway.cli("history", "policy").stdout
    assert "bootstrap" in history and "tighten" in history and "restore" in history  # from the backup


def test_another_stores_data_is_refused_and_never_acknowledged(gateway, redis_server):
    activate_v2(gateway)
    client = redis.Redis.from_url(redis_server["url"])
    client.flushall()
    foreign = RedisStore(redis_server["url"])  # another deployment's history, in our namespace
    identity = StoreIdentity(uuid.uuid4().hex, time.time())
    foreign.seed(StoreDump(identity, [], {}, [], []))
    foreign.add_version("policy", "sha256:x", "theirs.yaml", OTHER_POLICY.encode(), "them", "x", epoch=identity.epoch)
    change = foreign.flip(
        [ChangeItem("policy", "default", None, 1)], "them", "theirs", "activate", epoch=identity.epoch
    )
    wait_for_holding_replicas(gateway)

    other = f"holds another store's data: epoch {identity.epoch}"
    assert_refused(gateway, other)
    wait_for_heartbeats(client)  # status lists the replicas that heartbeat since the flush
    assert_status_reports(gateway, other)
    assert served_policies(gateway) == {"2"}
    assert foreign.acks(change.id) == []  # a replica never acknowledges a change it does not apply
    assert foreign.last_change_id() == 1 and [v.name for v in foreign.versions("policy")] == ["theirs.yaml"]
    foreign.close()

    refused = gateway.cli("store", "restore", check=False)
    assert refused.returncode == 2 and "is not empty" in refused.stderr
    client.flushall()
    wait_for_heartbeats(client)
    assert "in effect: 2/2" in gateway.cli("store", "restore").stdout
    assert_restored(gateway)


def test_a_deleted_sqlite_store_is_refused(tmp_path, mock_port, fragile_port):
    gw = Gateway(tmp_path, mock_port, fragile_port, workers=2).start()
    try:
        activate_v2(gw)
        for path in (tmp_path / "control").glob("control.sqlite3*"):
            path.unlink()
        done = push(gw, OTHER_POLICY, "unrelated.yaml", check=False)
        assert done.returncode == 2
        assert done.stderr.startswith(f"error: control store at {tmp_path / 'control' / 'control.sqlite3'} has lost")
        assert "policy up to 2" in done.stderr and len(done.stderr.strip().splitlines()) == 1
        gw.stop()
        gw.start()  # workers find the new, empty file: they serve their last-known-good state
        assert served_policies(gw) == {"2"}
        assert "in effect: 2/2" in gw.cli("store", "restore").stdout
        assert gw.cli("show", "policy", "1").stdout == POLICY
        assert "policy version 3 " in push(gw, POLICY_V3, "policy-v3.yaml").stdout
    finally:
        gw.stop()
