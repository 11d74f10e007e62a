"""A real redis-server for tests: start one on a port, wait until it answers PING.

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
) -> tuple[str, ServerProcess]:
    """Returns (URL with the password in it, process). `appendonly` keeps the data in `dir`
    across a restart; otherwise nothing is written to disk. With `tls` (a directory for a
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
