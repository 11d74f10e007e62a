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
    fresh CA and server certificate, or one made already) it listens on TLS only and the
    URL is rediss://, with the server's certificate as the client's too."""
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
        query = f"?ssl_ca_certs={ca}&ssl_certfile={cert}&ssl_keyfile={key}"
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
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key);
    the ones in `directory` if it has them already (servers of one cluster share them)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key, csr = directory / "server.crt", directory / "server.key", directory / "server.csr"
    if cert.exists():
        return ca, cert, key
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
    `down_after_ms`. `url` is the `redis+sentinel://` URL a gateway is given.

    With `password`, master and replica require it (`requirepass`, `masterauth`) and the
    sentinels know it (`auth-pass`); with `sentinel_password`, the sentinels require one
    of their own (`requirepass`, `sentinel-pass` among themselves); with `tls`, everything
    speaks TLS only, clients included (certificates required), and `url` is
    `rediss+sentinel://` with the CA and client certificate as options."""

    def __init__(
        self,
        root: Path,
        down_after_ms: int = 800,
        failover_timeout_ms: int = 3000,
        password: str | None = None,
        sentinel_password: str | None = None,
        tls: bool = False,
    ):
        self.root = root
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.password = password
        self.sentinel_password = sentinel_password
        self.certificates = make_certificates(root / "tls") if tls else None
        self.servers: dict[int, ServerProcess] = {}  # port -> redis-server (master or replica)
        self.sentinels: dict[int, ServerProcess] = {}  # port -> sentinel
        self.url = ""
        self.seen_at = 0.0

    def _tls_options(self) -> dict[str, str | bool]:
        """redis-py's TLS options for any of the cluster's processes (empty without TLS)."""
        if self.certificates is None:
            return {}
        ca, cert, key = map(str, self.certificates)
        return {"ssl": True, "ssl_ca_certs": ca, "ssl_certfile": cert, "ssl_keyfile": key}

    def server(self, port: int) -> redis.Redis:
        """A client of the master or replica on `port`."""
        return redis.Redis(host="127.0.0.1", port=port, password=self.password, **self._tls_options())  # type: ignore[arg-type]

    def sentinel(self, port: int) -> redis.Redis:
        options = self._tls_options()
        return redis.Redis(
            host="127.0.0.1",
            port=port,
            password=self.sentinel_password,
            socket_timeout=1,
            socket_connect_timeout=1,
            **options,
        )  # type: ignore[arg-type]

    def start(self) -> SentinelCluster:
        master_port, replica_port = free_port(), free_port()
        tls = ["--tls-replication", "yes", "--tls-auth-clients", "yes"] if self.certificates else []
        auth = ["--masterauth", self.password] if self.password else []
        for port, extra in ((master_port, []), (replica_port, ["--replicaof", "127.0.0.1", str(master_port)])):
            data = self.root / f"redis-{port}"
            data.mkdir(parents=True)
            # No wait before the first full sync (Redis waits 5 s for more replicas to join)
            extra += ["--repl-diskless-sync-delay", "0", *tls, *auth]
            _, self.servers[port] = start_redis(
                port=port,
                dir=data,
                appendonly=True,
                password=self.password,
                tls=self.root / "tls" if self.certificates else None,
                extra=extra,
            )
        replica = self.server(replica_port)
        deadline = time.monotonic() + 30
        while replica.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the replica on port {replica_port} never synced with the master")
            time.sleep(0.02)
        replica.close()
        for _ in range(3):
            port = free_port()
            conf = self.root / f"sentinel-{port}.conf"  # sentinels rewrite their config: their own file
            conf.write_text(self._sentinel_conf(port, master_port))
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
        self.url = self._url()
        self.wait_until(lambda s: s["num-slaves"] == 1 and s["num-other-sentinels"] == 2, "see everything")
        return self

    def _sentinel_conf(self, port: int, master_port: int) -> str:
        lines = [f"bind 127.0.0.1\ndir {self.root}"]
        if self.certificates:
            ca, cert, key = self.certificates
            lines += [f"port 0\ntls-port {port}\ntls-replication yes\ntls-auth-clients yes"]
            lines += [f"tls-ca-cert-file {ca}\ntls-cert-file {cert}\ntls-key-file {key}"]
        else:
            lines += [f"port {port}"]
        if self.sentinel_password:
            lines += [f"requirepass {self.sentinel_password}\nsentinel sentinel-pass {self.sentinel_password}"]
        lines += [
            f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {master_port} 2",
            f"sentinel down-after-milliseconds {SENTINEL_SERVICE} {self.down_after_ms}",
            f"sentinel failover-timeout {SENTINEL_SERVICE} {self.failover_timeout_ms}",
        ]
        if self.password:
            lines += [f"sentinel auth-pass {SENTINEL_SERVICE} {self.password}"]
        return "\n".join(lines) + "\n"

    def _url(self) -> str:
        """The URL a gateway is given: the master's password before `@`, the sentinels'
        and the TLS files as options."""
        scheme = "rediss+sentinel" if self.certificates else "redis+sentinel"
        auth = f":{self.password}@" if self.password else ""
        options = {"sentinel_password": self.sentinel_password} if self.sentinel_password else {}
        if self.certificates:
            ca, cert, key = self.certificates
            options |= {"ssl_ca_certs": str(ca), "ssl_certfile": str(cert), "ssl_keyfile": str(key)}
        query = "?" + "&".join(f"{k}={v}" for k, v in options.items()) if options else ""
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinels)
        return f"{scheme}://{auth}{hosts}/{SENTINEL_SERVICE}{query}"

    def master(self) -> dict:
        """What the first sentinel that answers says of the master (redis-py's parsed
        SENTINEL MASTER: ip, port, flags, num-slaves, config-epoch, ...)."""
        for port in self.sentinels:
            client = self.sentinel(port)
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
            try:
                state = self.master()
            except RuntimeError:  # no sentinel listening yet (or any more)
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                continue
            if predicate(state):
                self.seen_at = time.time()  # when wait_until saw it (for figures)
                return state
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sentinels did not {what} within {timeout}s: {state}")
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in [*self.sentinels.values(), *self.servers.values()]:
            stop_process(proc)
