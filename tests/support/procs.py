"""Real server processes for tests: start one, wait until it answers HTTP, stop it for sure.

Each process gets its own session (process group), because granian forks workers and
stopping only the parent could leave a worker serving the port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import IO


class ServerProcess(subprocess.Popen):
    """A Popen that owns the temp file its output goes to."""

    log: IO[bytes]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_process(
    argv: Sequence[str],
    ready_url: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 20,
) -> ServerProcess:
    """Start ``argv`` and return once ``ready_url`` gives any HTTP response.

    ``env`` adds to (and overrides) this process's environment. Output goes to a temp
    file, quoted in the error if the process dies or never gets ready.
    """
    log = tempfile.TemporaryFile()
    proc = ServerProcess(
        list(argv),
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    proc.log = log
    deadline = time.monotonic() + timeout
    while not _answers(ready_url):
        if proc.poll() is not None or time.monotonic() > deadline:
            output = _tail(log)
            stop_process(proc)
            raise RuntimeError(f"{ready_url} never answered (exit code {proc.returncode}):\n{output}")
        time.sleep(0.05)
    return proc


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Send ``sig`` to the process group, wait, then SIGKILL whatever is left of the group.

    The final SIGKILL catches a leader that ignored ``sig`` and forked workers that outlived
    it. Safe to call twice.
    """
    _signal_group(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()
    if isinstance(proc, ServerProcess):
        proc.log.close()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the whole group is gone already


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # an error status still means the server is up
    except OSError:
        return False


def _tail(log, limit: int = 4000) -> str:
    log.seek(0)
    return log.read()[-limit:].decode(errors="replace")
