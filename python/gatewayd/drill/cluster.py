"""The cluster a drill starts when it is given no --target: a redis-server, two instances
of the bundled mock provider (`mock` serves the current routing, `mock-b` a routing
candidate), and one `gatewayd serve` whose N replicas share the Redis control store."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

from gatewayd.errors import BadInputError

POLICY = "default: allow\nrules:\n  - {id: no-secret, when: {prompt: {keywords: [swordfish]}}, action: deny}\n"
ROUTING = 'routes:\n  - {match: "mock-*", provider: mock}\nmodels: [mock-gpt]\n'
RUNTIME = "cache: {enabled: true, ttl_s: 300, mode: deterministic}\naudit: {fsync: interval, fsync_interval_ms: 100}\n"


class Cluster:
    def __init__(self, root: Path, replicas: int):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.key = "drill-" + secrets.token_hex(8)
        self.procs: list[subprocess.Popen] = []
        redis_port, mock_port, mock_b_port, port = (_free_port() for _ in range(4))
        self.url = f"http://127.0.0.1:{port}"
        redis = shutil.which("redis-server")
        if redis is None:
            raise BadInputError("drill: redis-server is not installed (the drill's cluster shares a Redis store)")
        self._start([redis, "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "", "--appendonly", "no"])
        _wait_port(redis_port)
        for mock in (mock_port, mock_b_port):
            self._start([sys.executable, "-m", "gatewayd.mock", "--port", str(mock), "--require-key", "drill-provider"])
            _wait_port(mock)
        for name, text in (("policy.yaml", POLICY), ("routing.yaml", ROUTING), ("runtime.yaml", RUNTIME)):
            (root / name).write_text(text)
        self.config = root / "gatewayd.toml"
        self.config.write_text(
            textwrap.dedent(
                f"""\
                [server]
                port = {port}
                workers = {replicas}
                [control]
                dir = "control"
                redis_url = "redis://127.0.0.1:{redis_port}/0"
                [audit]
                dir = "audit"
                [[keys]]
                tenant = "drill"
                sha256 = "{hashlib.sha256(self.key.encode()).hexdigest()}"
                [providers.mock]
                kind = "openai"
                base_url = "http://127.0.0.1:{mock_port}/v1"
                api_key = "drill-provider"
                [providers.mock-b]
                kind = "openai"
                base_url = "http://127.0.0.1:{mock_b_port}/v1"
                api_key = "drill-provider"
                [bootstrap]
                policy = "policy.yaml"
                routing = "routing.yaml"
                config = "runtime.yaml"
                """
            )
        )
        self._start([sys.executable, "-m", "gatewayd.cli", "--config", str(self.config), "serve"], log="gatewayd.log")
        _wait_ready(self.url + "/readyz", self.procs[-1], root / "gatewayd.log")

    def _start(self, argv: list[str], log: str | None = None) -> None:
        out = open(self.root / log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (the process keeps it)
        self.procs.append(
            subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        )

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"drill: nothing listening on port {port} after {timeout:g} s")


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"drill: gatewayd exited ({proc.returncode}); see {log}")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"drill: {url} not ready after {timeout:g} s; see {log}")
