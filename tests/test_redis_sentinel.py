"""The control store behind Redis Sentinel, with real parts: one master, one replica and
three sentinels on loopback, two gateways ("hosts") given the `redis+sentinel://` URL,
and the master killed under traffic."""

from __future__ import annotations

import signal
import threading
import time

import pytest
import redis

from gatewayd.control.model import StoreUnavailableError
from gatewayd.control.redis_store import RedisStore
from support.gateway import KEYS, POLICY, POLICY_V2, Gateway
from support.procs import free_port, stop_process
from support.redis import SentinelCluster
from support.traffic import Traffic

POLICY_V3 = POLICY_V2.replace("top-secret", "after-failover")


@pytest.fixture(scope="module")
def sentinel_cluster(tmp_path_factory):
    cluster = SentinelCluster(tmp_path_factory.mktemp("sentinel")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def gateways(tmp_path_factory, mock_port, fragile_port, sentinel_cluster):
    started = []
    try:
        for prefix in ("gwA", "gwB"):
            root = tmp_path_factory.mktemp(prefix)
            gw = Gateway(root, mock_port, fragile_port, redis_url=sentinel_cluster.url, prefix=prefix)
            started.append(gw.start())
        yield started
    finally:
        for gw in started:
            gw.stop()


def push(gw: Gateway, text: str, name: str) -> int:
    path = gw.root / name
    path.write_text(text)
    out = gw.cli("push", "policy", str(path), "--reason", f"push {name}").stdout
    return int(out.split(" version ")[1].split()[0])


def wait_replicated(cluster: SentinelCluster, master_port: int) -> None:
    """Until the replica has every write the master had when this was called."""
    master = redis.Redis(port=master_port)
    replica = redis.Redis(port=next(p for p in cluster.servers if p != master_port))
    try:
        target = master.info("replication")["master_repl_offset"]
        deadline = time.monotonic() + 10
        while replica.info("replication")["slave_repl_offset"] < target:
            assert time.monotonic() < deadline, "the replica never caught up"
            time.sleep(0.02)
    finally:
        master.close()
        replica.close()


def unreachable_for(url: str, since: float, result: list[float]) -> None:
    """Appends how long after `since` (time.monotonic) the store answered again."""
    store = RedisStore(url)
    try:
        while True:
            try:
                store.last_change_id()
                result.append(time.monotonic() - since)
                return
            except StoreUnavailableError:
                time.sleep(0.01)
    finally:
        store.close()


def flip_until_accepted(gw: Gateway, *args: str) -> tuple[int, float]:
    """Runs the flip until the store takes it: (refused attempts, seconds until taken)."""
    started = time.monotonic()
    refused = 0
    while True:
        done = gw.cli(*args, "--timeout", "10", check=False)
        if done.returncode == 0:
            assert "in effect: 2/2 replicas acknowledged" in done.stdout, done.stdout
            return refused, time.monotonic() - started
        # Refused whole, in one line naming the store: never half-applied.
        assert done.returncode == 1 and "control store redis+sentinel://" in done.stderr, done
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        refused += 1
        assert time.monotonic() - started < 60, "flips never resumed after the failover"


def test_killing_the_master_under_traffic_fails_over_and_flips_resume(gateways, sentinel_cluster):
    op = gateways[0]
    cluster = sentinel_cluster
    old_master = cluster.master_port()
    replica_port = next(p for p in cluster.servers if p != old_master)
    status = op.cli("status").stdout.splitlines()
    assert status[-1].startswith(f"store: sentinel service gwmaster: master 127.0.0.1:{old_master} up, never failed")
    assert "2 sentinel" not in status[-1] and "3 sentinel(s)" in status[-1] and "1 replica(s)" in status[-1]

    (op.root / "policy-v2.yaml").write_text(POLICY_V2)
    pushed = op.cli("push", "policy", str(op.root / "policy-v2.yaml"), "--reason", "replicated")
    assert "no replica confirmed" not in pushed.stderr  # the replica confirmed it before the answer
    v2 = int(pushed.stdout.split(" version ")[1].split()[0])
    with Traffic([gw.url for gw in gateways], KEYS["acme"], threads=4) as traffic:
        traffic.wait_for(20, after=0)
        _, baseline_s = flip_until_accepted(op, "activate", "policy", str(v2), "--reason", "before")
        wait_replicated(cluster, old_master)
        stop_process(cluster.servers[old_master], signal.SIGKILL)
        killed, killed_monotonic = time.time(), time.monotonic()
        promoted = threading.Thread(target=cluster.wait_until, args=(lambda s: s["port"] == replica_port, "promote"))
        promoted.start()
        answered: list[float] = []
        probe = threading.Thread(target=unreachable_for, args=(cluster.url, killed_monotonic, answered))
        probe.start()
        refused, refused_for_s = flip_until_accepted(op, "rollback", "policy", "--reason", "after the failover")
        resumed = time.time()
        promoted.join()
        probe.join()
        promoted_s = cluster.seen_at - killed
        traffic.wait_for(20, after=resumed)

    # Fail static: not one request failed because the store went away.
    assert not traffic.errors, traffic.errors[:3]
    assert all(s.status == 200 for s in traffic.samples)
    during = [s for s in traffic.samples if killed <= s.started < resumed]
    assert {s.policy_version for s in during} <= {v2, v2 - 1}
    assert {s.policy_version for s in traffic.since(resumed)} == {v2 - 1}  # the rollback is in effect
    # The sentinels promoted the replica; it had replicated the history, so it is whole (R17).
    assert cluster.master_port() == replica_port
    v3 = push(op, POLICY_V3, "policy-v3.yaml")
    assert v3 == v2 + 1  # numbering carries on: no version number given twice
    assert [op.cli("show", "policy", str(v)).stdout for v in (1, v2, v3)] == [POLICY, POLICY_V2, POLICY_V3]
    history = op.cli("history", "policy").stdout
    assert "after the failover" in history and "before" in history
    status = op.cli("status").stdout.splitlines()
    assert status[0].startswith("active: ") and "policy/default=v1," in status[0], status
    assert all(" in sync " in line for line in status[1:-1]) and len(status) == 4, status
    assert status[-1].startswith(
        f"store: sentinel service gwmaster: master 127.0.0.1:{replica_port} up, failed over (config epoch 1)"
    ), status
    print(
        f"\nsentinel failover under traffic: replica promoted {promoted_s:.2f} s after the kill, "
        f"the store answering again through the sentinel URL {answered[0]:.2f} s after it; "
        f"{len(during)} requests while failing over, {sum(s.status != 200 for s in during) + len(traffic.errors)} "
        f"failed; the rollback refused {refused} time(s), in effect on 2/2 replicas {refused_for_s:.2f} s after "
        f"the kill (a flip without failover, same traffic: {baseline_s:.2f} s; ratio {refused_for_s / baseline_s:.1f})"
    )


def test_no_master_left_status_says_so_and_replicas_keep_serving(gateways, sentinel_cluster):
    """With the last master killed there is nothing to promote: the sentinels mark it down,
    `status` says the store is unreachable and why, and requests are still answered."""
    op = gateways[0]
    cluster = sentinel_cluster
    master = cluster.master_port()
    stop_process(cluster.servers[master], signal.SIGKILL)
    cluster.wait_until(lambda s: s["is_odown"], "mark the master down")
    with Traffic([gw.url for gw in gateways], KEYS["acme"], threads=2) as traffic:
        traffic.wait_for(10, after=time.time())
        done = op.cli("status", check=False)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0].startswith("store UNREACHABLE: control store redis+sentinel://") and "fail static" in lines[0]
    assert lines[1].startswith(f"store: sentinel service gwmaster: master 127.0.0.1:{master} DOWN ("), lines
    # The sentinel asked first may not have heard its peers agree yet (s_down before o_down).
    assert "o_down" in lines[1] or "s_down" in lines[1], lines
    assert not traffic.errors and all(s.status == 200 for s in traffic.samples)
    refused = op.cli("rollback", "policy", "--reason", "no master", check=False)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1, refused


def test_a_promoted_replica_that_missed_writes_is_refused_and_numbers_are_never_reused(
    tmp_path, mock_port, fragile_port
):
    """Replication is asynchronous: the replica is cut off from the master (pointed at a
    port nobody listens on), a version is pushed to the master alone (the push warns that
    no replica confirmed it), and the master is killed. The sentinels promote the
    replica, which lacks that version: pushing again would give its number to another
    document, so pushes are refused, replicas hold, and `status` says the store went
    back in time (R17)."""
    cluster = SentinelCluster(tmp_path / "sentinel").start()
    gw = Gateway(tmp_path, mock_port, fragile_port, workers=2, redis_url=cluster.url, prefix="gw")
    try:
        gw.start()
        master = cluster.master_port()
        replica_port = next(p for p in cluster.servers if p != master)
        replica = redis.Redis(port=replica_port)
        replica.replicaof("127.0.0.1", free_port())  # the sentinels put this right only after failover-timeout
        replica.close()
        (gw.root / "policy-v2.yaml").write_text(POLICY_V2)
        pushed = gw.cli("push", "policy", str(gw.root / "policy-v2.yaml"), "--reason", "cut off")
        v2 = int(pushed.stdout.split(" version ")[1].split()[0])
        assert "no replica confirmed this write within 1000 ms; a failover now would lose it" in pushed.stderr
        stop_process(cluster.servers[master], signal.SIGKILL)
        cluster.wait_until(lambda s: s["port"] == replica_port and not s["is_sdown"], "promote the replica")
        with Traffic([gw.url], KEYS["acme"], threads=2) as traffic:
            traffic.wait_for(10, after=time.time())
            refused = gw.cli("push", "policy", str(gw.root / "policy-v2.yaml"), "--reason", "again", check=False)
        assert refused.returncode == 2, refused
        line = refused.stderr.strip()
        assert "\n" not in line and "has gone back in time" in line and f"policy versions up to {v2}" in line, line
        assert "refusing to push" in line
        # The sentinel asked first may not have reached the promoted master yet ("DOWN
        # (disconnected)"), or may still flag the failover in progress: asked again until up.
        deadline = time.monotonic() + 15
        while True:
            done = gw.cli("status", check=False)
            lines = done.stdout.splitlines()
            promoted = f"store: sentinel service gwmaster: master 127.0.0.1:{replica_port} up, "
            if lines[-1].startswith(promoted) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert done.returncode == 1 and lines[0].startswith("store LOST: ") and "gone back in time" in lines[0]
        assert lines[-1].startswith(promoted), lines
        assert " failed over (config epoch " in lines[-1], lines
        assert not traffic.errors and all(s.status == 200 for s in traffic.samples)
        check = redis.Redis(port=replica_port)
        assert check.get("gatewayd:version-id:policy") == b"1"  # nothing was numbered on the promoted replica
        check.close()
    finally:
        gw.stop()
        cluster.stop()
