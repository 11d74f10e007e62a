"""The cap on open client connections per worker, fitted to the open-file limit.

granian's ``backpressure`` is the cap: a worker holds a permit per open connection and
accepts no more while all are taken, so the connections beyond it wait in the kernel's
listen backlog and cost the worker no file descriptor. Accept never fails with "too many
open files", and the audit segments and the metrics file can always be opened.
"""

from __future__ import annotations

import logging
import os
import resource

log = logging.getLogger("gatewayd")

# Descriptors a worker needs besides its connections: audit segments and checkpoints, the
# metrics file, the slot lock, the control store, the runtime's own (about 40 when idle).
FILES_RESERVE = 100


def raise_open_file_limit() -> int:
    """Raises the soft open-file limit to the hard one (workers inherit it); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass  # not allowed here: keep the soft limit
    return soft


def connection_cap(configured: int) -> int:
    """``configured``, lowered so that each client connection can hold one upstream
    connection while its request is in flight and FILES_RESERVE stay free."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, (soft - FILES_RESERVE) // 2))


class ConnectionCapWatch:
    """Logs once when this worker's client connections reach the cap, and once when they
    are back under it: with the cap reached, new clients wait in the backlog unanswered,
    and an operator needs to see why."""

    def __init__(self, port: int, cap: int):
        self.cap = cap
        self._port_hex = f":{port:04X}"
        self._at_cap = False

    def check(self) -> None:
        """Called about once a second; cheap while the worker's descriptors are few."""
        try:
            if len(os.listdir("/proc/self/fd")) < self.cap:  # each connection is a descriptor
                count = 0
            else:
                count = self._client_connections()
        except OSError:  # no /proc (not Linux): granian still enforces the cap
            return
        if count >= self.cap and not self._at_cap:
            log.warning(
                "client connection cap reached: %d open in this worker (server.max_connections, "
                "fitted to the open-file limit); new connections wait in the listen backlog",
                count,
            )
        elif count < self.cap and self._at_cap:
            log.info("client connections back under the cap (%d)", self.cap)
        self._at_cap = count >= self.cap

    def _client_connections(self) -> int:
        """This process's TCP sockets on the listening port, the listener excepted."""
        inodes = set()
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue  # closed meanwhile
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        count = 0
        for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
            try:
                with open(table) as f:
                    next(f)  # the header line
                    for line in f:
                        fields = line.split()
                        # local address, state (0A: listening), inode
                        if fields[1].endswith(self._port_hex) and fields[3] != "0A" and fields[9] in inodes:
                            count += 1
            except FileNotFoundError:
                continue  # no IPv6
        return count
