"""Sentinels that require a password of their own, and TLS everywhere (`rediss+sentinel://`),
with real parts: a SentinelCluster whose master and replica require a password and whose
sentinels require another, or that speaks TLS only (client certificates required); a
gateway serves, flips, and flips again after the master is killed; a wrong sentinel
password is one clear line that never shows it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from support.gateway import KEYS, POLICY_V2, Gateway
from support.procs import stop_process
from support.redis import SentinelCluster
from support.traffic import Traffic

MASTER_PW = "master-pw-1"
SENTINEL_PW = "sentinel-pw-2"


def serve_flip_fail_over_flip(gw: Gateway, cluster: SentinelCluster) -> None:
    """Pushes and activates a version, kills the master, rolls back through the promoted
    replica: requests are answered throughout and each flip is in effect."""
    status = gw.cli("status").stdout.splitlines()
    assert status[-1].startswith("store: sentinel service gwmaster: master 127.0.0.1:") and " up, " in status[-1]
    (gw.root / "policy-v2.yaml").write_text(POLICY_V2)
    pushed = gw.cli("push", "policy", str(gw.root / "policy-v2.yaml"), "--reason", "through the sentinels")
    assert "no replica confirmed" not in pushed.stderr, pushed.stderr
    v2 = int(pushed.stdout.split(" version ")[1].split()[0])
    master = cluster.master_port()
    replica_port = next(p for p in cluster.servers if p != master)
    with Traffic([gw.url], KEYS["acme"], threads=2) as traffic:
        activated = gw.cli("activate", "policy", str(v2), "--reason", "before")
        assert "in effect: 1/1 replicas acknowledged" in activated.stdout, activated.stdout
        stop_process(cluster.servers[master], signal.SIGKILL)
        cluster.wait_until(lambda s: s["port"] == replica_port and not s["is_sdown"], "promote the replica")
        deadline = time.monotonic() + 20
        while (done := gw.cli("rollback", "policy", "--reason", "after", "--timeout", "10", check=False)).returncode:
            assert time.monotonic() < deadline, done.stderr
        assert "in effect: 1/1 replicas acknowledged" in done.stdout, done.stdout
        resumed = time.time()
        traffic.wait_for(5, after=resumed)
    assert not traffic.errors and all(s.status == 200 for s in traffic.samples), traffic.errors[:3]
    assert {s.policy_version for s in traffic.since(resumed)} == {v2 - 1}
    status = gw.cli("status").stdout.splitlines()
    assert status[-1].startswith(f"store: sentinel service gwmaster: master 127.0.0.1:{replica_port} up, failed over")


@pytest.mark.parametrize(
    "secured",
    [
        {"password": MASTER_PW, "sentinel_password": SENTINEL_PW},
        {"tls": True, "password": MASTER_PW, "sentinel_password": SENTINEL_PW},
    ],
    ids=["passwords", "tls"],
)
def test_a_gateway_serves_and_flips_through_secured_sentinels(tmp_path, mock_port, fragile_port, secured):
    cluster = SentinelCluster(tmp_path / "sentinel", **secured).start()
    gw = Gateway(tmp_path, mock_port, fragile_port, redis_url=cluster.url, prefix="gw")
    try:
        assert cluster.url.startswith("rediss+sentinel://" if secured.get("tls") else "redis+sentinel://")
        gw.start()
        serve_flip_fail_over_flip(gw, cluster)
    finally:
        gw.stop()
        cluster.stop()


def test_a_wrong_sentinel_password_is_one_clear_line_without_the_password(tmp_path):
    cluster = SentinelCluster(tmp_path / "sentinel", password=MASTER_PW, sentinel_password=SENTINEL_PW).start()
    try:
        config = tmp_path / "gatewayd.toml"
        config.write_text('[providers.p]\nkind = "openai"\nbase_url = "http://127.0.0.1:1"\n')
        for url, says in (
            (
                cluster.url.replace(SENTINEL_PW, "not-the-pw"),
                "authentication failed (invalid username-password pair or user is disabled.); check sentinel_password",
            ),
            (cluster.url.partition("?")[0], "the sentinel requires a password: give sentinel_password"),
        ):
            env = {**os.environ, "GATEWAYD_CONTROL_REDIS_URL": url}
            argv = [sys.executable, "-m", "gatewayd.cli", "--config", str(config)]
            status = subprocess.run([*argv, "status"], env=env, capture_output=True, text=True, timeout=30)
            assert status.returncode == 1, status
            first, *rest = status.stdout.splitlines()
            assert (
                first.startswith("store UNREACHABLE: control store redis+sentinel://127.0.0.1:")
                and "/gwmaster: no master found for 'gwmaster': no sentinel answers (127.0.0.1:" in first
            ), first
            assert says in first, first
            assert rest[-1].startswith("store: sentinel service gwmaster: no sentinel answers"), rest
            pushed = subprocess.run(
                [*argv, "rollback", "policy", "--reason", "x"], env=env, capture_output=True, text=True, timeout=30
            )
            assert pushed.returncode == 1 and len(pushed.stderr.strip().splitlines()) == 1, pushed
            assert says in pushed.stderr, pushed.stderr
            for out in (status.stdout + status.stderr, pushed.stdout + pushed.stderr):
                assert "not-the-pw" not in out and MASTER_PW not in out and SENTINEL_PW not in out
    finally:
        cluster.stop()
