"""Stable replica names: each worker claims the lowest free slot on its host, so a restarted
worker continues the same audit chain under the same name.

A slot whose chain is corrupt is refused, not fatal: one bad chain must not take the whole
gateway down (each granian worker is a replica, and a worker that fails to start makes
granian stop them all). The worker keeps that slot claimed, so no other worker retries
it, leaves the chain untouched for forensics, and serves as the next free replica.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from gatewayd.errors import ChainCorruptError

MAX_SLOTS = 1024

log = logging.getLogger("gatewayd")
Opened = TypeVar("Opened")


@dataclass
class Claim(Generic[Opened]):
    name: str
    opened: Opened  # what `open_chain` returned for this replica
    # Slot locks, the refused slots' included: they must stay open for the process's lifetime.
    fds: list[int]
    refused: list[tuple[str, str]] = field(default_factory=list)  # (replica, why its chain was refused)


def claim_replica(directory: Path, prefix: str, open_chain: Callable[[str], Opened]) -> Claim[Opened]:
    """Claims the lowest free slot whose chain `open_chain(name)` opens. A chain it finds
    corrupt (ChainCorruptError) is logged and passed over; any other failure is raised."""
    fds: list[int] = []
    refused: list[tuple[str, str]] = []
    try:
        while True:
            name, fd = claim_slot(directory, prefix)
            fds.append(fd)
            try:
                return Claim(name, open_chain(name), fds, refused)
            except ChainCorruptError as exc:
                refused.append((name, str(exc)))
                log.error(
                    "replica %s refused: %s; its chain is left as it is for inspection "
                    "(gatewayd audit verify), and this worker serves as the next free replica",
                    name,
                    exc,
                )
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


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
