"""Real redis-server processes for tests: start one on a port, wait until it answers PING;
or a Sentinel cluster (`SentinelCluster`: master, replica, three sentinels).

Stop it with `procs.stop_process` (SIGTERM), or `stop_process(proc, signal.SIGKILL)` to
crash it; starting again with the same port (and `dir`, for `appendonly`) restarts it.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import redis

from support.procs import ServerProcess, _tail, free_port, stop_process

REDIS_SERVER = "/usr/bin/redis-server"


def start_redis(
    port: int | None = None,
    password: str | None = None,
    dir: Path | None = None,
    appendonly: bool = False,
    tls: Path | None = None,
    timeout: float = 10,
    extra: list[str] = (),
) -> tuple[str, ServerProcess]:
    """Returns (URL with the password in it, process). `appendonly` keeps the data in `dir`
    across a restart; otherwise nothing is written to disk. `extra` is more arguments
    (`--replicaof host port`). With `tls` (a directory for a
    fresh CA and server certificate) it listens on TLS only and the URL is rediss://."""
    port = port or free_port()
    argv = [REDIS_SERVER, "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "yes" if appendonly else "no", "--appendfsync", "always"]
    query = ""
    if tls is None:
        argv += ["--port", str(port)]
    else:
        ca, cert, key = make_certificates(tls)
        argv += ["--port", "0", "--tls-port", str(port), "--tls-auth-clients", "no"]
        argv += ["--tls-ca-cert-file", str(ca), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
        query = f"?ssl_ca_certs={ca}"
    if dir is not None:
        argv += ["--dir", str(dir)]
    if password:
        argv += ["--requirepass", password]
    argv += extra
    log = tempfile.TemporaryFile()
    proc = ServerProcess(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log = log
    auth = f":{password}@" if password else ""
    url = f"{'rediss' if tls else 'redis'}://{auth}127.0.0.1:{port}/0{query}"
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return url, proc
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    output = _tail(log)
                    stop_process(proc)
                    raise RuntimeError(f"redis-server on port {port} never answered:\n{output}") from None
                time.sleep(0.02)
    finally:
        client.close()


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key, csr = directory / "server.crt", directory / "server.key", directory / "server.csr"
    san = directory / "san.ext"
    san.write_text("subjectAltName=IP:127.0.0.1\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for argv in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=gatewayd test CA"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "1"]
        + ["-extfile", san],
    ):
        subprocess.run(["openssl", *map(str, argv)], check=True, capture_output=True)
    return ca, cert, key


SENTINEL_SERVICE = "gwmaster"


class SentinelCluster:
    """One master, one replica and three sentinels on loopback, each on a free port with
    its files in `root`; the sentinels fail over after the master is silent for
    `down_after_ms`. `url` is the `redis+sentinel://` URL a gateway is given."""

    def __init__(self, root: Path, down_after_ms: int = 800, failover_timeout_ms: int = 3000):
        self.root = root
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.servers: dict[int, ServerProcess] = {}  # port -> redis-server (master or replica)
        self.sentinels: dict[int, ServerProcess] = {}  # port -> sentinel
        self.url = ""
        self.seen_at = 0.0

    def start(self) -> SentinelCluster:
        master_port, replica_port = free_port(), free_port()
        for port, extra in ((master_port, []), (replica_port, ["--replicaof", "127.0.0.1", str(master_port)])):
            data = self.root / f"redis-{port}"
            data.mkdir(parents=True)
            # No wait before the first full sync (Redis waits 5 s for more replicas to join)
            extra += ["--repl-diskless-sync-delay", "0"]
            _, self.servers[port] = start_redis(port=port, dir=data, appendonly=True, extra=extra)
        replica = redis.Redis(port=replica_port)
        deadline = time.monotonic() + 30
        while replica.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the replica on port {replica_port} never synced with the master")
            time.sleep(0.02)
        replica.close()
        for _ in range(3):
            port = free_port()
            conf = self.root / f"sentinel-{port}.conf"  # sentinels rewrite their config: their own file
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.root}\n"
                f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {master_port} 2\n"
                f"sentinel down-after-milliseconds {SENTINEL_SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {SENTINEL_SERVICE} {self.failover_timeout_ms}\n"
            )
            log = tempfile.TemporaryFile()
            proc = ServerProcess(
                [REDIS_SERVER, str(conf), "--sentinel"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            proc.log = log
            self.sentinels[port] = proc
        self.url = f"redis+sentinel://{','.join(f'127.0.0.1:{p}' for p in self.sentinels)}/{SENTINEL_SERVICE}"
        self.wait_until(lambda s: s["num-slaves"] == 1 and s["num-other-sentinels"] == 2, "see everything")
        return self

    def master(self) -> dict:
        """What the first sentinel that answers says of the master (redis-py's parsed
        SENTINEL MASTER: ip, port, flags, num-slaves, config-epoch, ...)."""
        for port in self.sentinels:
            client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
            try:
                return client.sentinel_master(SENTINEL_SERVICE)
            except (redis.ConnectionError, redis.TimeoutError):
                continue
            finally:
                client.close()
        raise RuntimeError("no sentinel answers")

    def master_port(self) -> int:
        return int(self.master()["port"])

    def wait_until(self, predicate, what: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            state = self.master()
            if predicate(state):
                self.seen_at = time.time()  # when wait_until saw it (for figures)
                return state
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sentinels did not {what} within {timeout}s: {state}")
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in [*self.sentinels.values(), *self.servers.values()]:
            stop_process(proc)
