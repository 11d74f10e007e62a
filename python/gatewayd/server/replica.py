"""Stable replica names: each worker claims the lowest free slot on its host, so a restarted
worker continues the same audit chain under the same name."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

MAX_SLOTS = 1024


def claim_slot(directory: Path, prefix: str = "") -> tuple[str, int]:
    """Returns (replica name, lock fd); the fd must stay open for the process's lifetime."""
    directory.mkdir(parents=True, exist_ok=True)
    host = prefix or socket.gethostname()
    for slot in range(MAX_SLOTS):
        fd = os.open(directory / f"slot-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return f"{host}-w{slot}", fd
    raise RuntimeError(f"no free replica slot in {directory} (more than {MAX_SLOTS} workers?)")
