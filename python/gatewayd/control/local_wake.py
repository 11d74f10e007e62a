"""Change hints for the embedded store: every subscription owns a named pipe (FIFO) in the
store's `wake/` directory, and every write that adds a change puts a byte into each.

A replica's agent thread then sleeps in select() until a flip, where it used to read the
store every 10 ms: 100 wake-ups a second cost an idle worker about 16 ms of CPU a second
(bench/load_bench.py --parts idle has the figures). Hints can be lost (R16): a writer that
cannot open a pipe skips it, and the agent's periodic resync catches up.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import sqlite3
import time
import uuid
from pathlib import Path

WAKE_DIR = "wake"
# Where FIFOs cannot be made (a filesystem without them), a subscription reads the last
# change id this often instead.
FALLBACK_CHECK_S = 0.01


def wake_subscribers(store_dir: Path) -> None:
    """One byte into every subscription's FIFO, removing those nobody reads any more (their
    process is gone). Never raises: the write it follows is committed, and hints are hints."""
    wake = store_dir / WAKE_DIR
    try:
        names = os.listdir(wake)
    except OSError:
        return
    for name in names:
        path = wake / name
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # a FIFO without a reader: its subscription died
                with contextlib.suppress(OSError):
                    path.unlink()
            continue
        try:
            os.write(fd, b"!")
        except OSError:
            pass  # full (EAGAIN): a wake-up is pending already
        finally:
            os.close(fd)


class LocalSubscription:
    """Change hints for one thread: `wait` is True when the last change id differs from the
    one seen at the previous True (always True first, like a fresh Redis subscription)."""

    def __init__(self, db_path: Path, check_interval_s: float | None = None):
        self._db = sqlite3.connect(db_path, timeout=10, isolation_level=None, check_same_thread=False)
        self._seen: int | None = None
        self._check_interval_s = FALLBACK_CHECK_S if check_interval_s is None else check_interval_s
        self._fifo: Path | None = db_path.parent / WAKE_DIR / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._fds: list[int] = []
        try:
            self._fifo.parent.mkdir(exist_ok=True)
            os.mkfifo(self._fifo, 0o600)
            self._fds.append(os.open(self._fifo, os.O_RDONLY | os.O_NONBLOCK))
            # Our own writer keeps the pipe from reading as closed (select would spin) when
            # no flip holds it open.
            self._fds.append(os.open(self._fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            self._drop_fifo()  # no FIFOs here: read the change id every check_interval_s

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self._drain()  # before the read: a change committed after it wakes the select below
            (last,) = self._db.execute("SELECT coalesce(max(id), 0) FROM changes").fetchone()
            if last != self._seen:
                self._seen = last
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._fds:
                select.select(self._fds[:1], [], [], remaining)
            else:
                time.sleep(min(self._check_interval_s, remaining))

    def _drain(self) -> None:
        if self._fds:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._fds[0], 4096):
                    pass

    def close(self) -> None:
        self._drop_fifo()
        self._db.close()

    def _drop_fifo(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        if self._fifo is not None:
            with contextlib.suppress(OSError):
                self._fifo.unlink()
            self._fifo = None
