"""Run-time keys behind Redis Sentinel, with real parts (master, replica, three sentinels,
a gateway, the CLI, the openai SDK): a key's record is confirmed on the replica before
the key is reported, like versions and flips, so killing the master right after keeps
it; a write no replica confirms warns, once until one is confirmed again."""

from __future__ import annotations

import logging
import re
import signal
import time

import msgspec
import openai
import pytest

from gatewayd.control.keys import RuntimeKey
from gatewayd.control.model import StoreIdentity
from gatewayd.control.redis_store import RedisStore
from support.gateway import Gateway
from support.procs import free_port, stop_process
from support.redis import SentinelCluster

HI = [{"role": "user", "content": "hello through the promoted replica"}]
UNCONFIRMED = "no replica confirmed this write within 1000 ms; a failover now would lose it"


@pytest.fixture
def cluster(tmp_path):
    started = SentinelCluster(tmp_path / "sentinel").start()
    yield started
    started.stop()


def test_a_key_created_right_before_the_master_dies_works_through_the_promoted_replica(
    tmp_path, mock_port, fragile_port, cluster
):
    gw = Gateway(tmp_path, mock_port, fragile_port, redis_url=cluster.url, prefix="gw")
    try:
        gw.start()
        master = cluster.master_port()
        replica_port = next(p for p in cluster.servers if p != master)
        created = gw.cli("keys", "create", "--tenant", "acme", "--name", "ci-bot")
        assert UNCONFIRMED not in created.stderr  # the replica confirmed the key before the answer
        secret = re.search(r"\(shown once\): (\S+)", created.stdout).group(1)
        stop_process(cluster.servers[master], signal.SIGKILL)  # right away: no waiting for replication
        cluster.wait_until(lambda s: s["port"] == replica_port and not s["is_sdown"], "promote the replica")
        promoted = cluster.server(replica_port)
        assert promoted.hexists("gatewayd:runtime-keys", "ci-bot")
        promoted.close()
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0)
        assert client.chat.completions.create(model="mock-gpt", messages=HI).choices[0].message.content
        assert "ci-bot" in gw.cli("keys", "list", "--tenant", "acme").stdout
        # Revoked through the promoted replica (now a master without replica: it warns).
        revoked = gw.cli("keys", "revoke", "ci-bot", "--reason", "after the failover")
        assert revoked.stderr.count(UNCONFIRMED) == 1, revoked.stderr  # two writes, one warning
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="mock-gpt", messages=HI)
    finally:
        gw.stop()


def test_key_and_identity_writes_wait_for_the_replica_and_warn_when_none_confirms(cluster, caplog):
    store = RedisStore(cluster.url)
    master = cluster.master_port()
    replica_port = next(p for p in cluster.servers if p != master)
    key = RuntimeKey("ci-bot", "acme", "0" * 64, time.time(), "ci")
    replica = cluster.server(replica_port)
    try:
        with caplog.at_level(logging.WARNING, logger="gatewayd.redis"):
            assert store.add_key(key)
            assert not caplog.records  # confirmed by the replica
            replica.replicaof("127.0.0.1", free_port())  # cut off from the master
            started = time.monotonic()
            store.set_key(RuntimeKey("ci-bot", "acme", "0" * 64, key.created_at, "ci", revoked_at=time.time()))
            waited_s = time.monotonic() - started
            assert store.claim_identity(StoreIdentity("e1", time.time()))
            warnings = [r.getMessage() for r in caplog.records]
            assert len(warnings) == 1 and UNCONFIRMED in warnings[0], warnings  # once for both writes
            assert 1.0 <= waited_s < 2.5  # the WAIT ran to its 1000 ms before the write was reported
            replica.replicaof("127.0.0.1", master)
            while replica.info("replication").get("master_link_status") != "up":
                time.sleep(0.02)
            assert store.add_key(msgspec.structs.replace(key, name="ci-bot-2"))
            assert caplog.records[-1].getMessage().endswith("a replica confirms writes again")
        assert replica.hexists("gatewayd:runtime-keys", "ci-bot-2")
    finally:
        replica.close()
        store.close()
