"""The replica agent: keeps one serving process in step with the store's pointers.

It runs in a thread of its own so control work (fetching, compiling) never stalls the
event loop that serves requests. On each change it compiles the pointed-to versions,
fences the cache to the new version sets (R5), swaps the snapshot atomically (R6), writes
the boundary into the audit chain, and acknowledges the change, or refuses it with the
error and keeps serving its last good snapshot (R4).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Callable

from gatewayd.control import snapshot as snapshots
from gatewayd.control.documents import DocumentError
from gatewayd.control.local_store import LocalStore
from gatewayd.control.model import Ack, Replica
from gatewayd.control.snapshot import CompiledVersions, IncompleteState, Snapshot

log = logging.getLogger("gatewayd.agent")

HEARTBEAT_S = 1.0


class ReplicaAgent:
    def __init__(
        self,
        name: str,
        store: LocalStore,
        providers: list[tuple[str, str]],
        on_event: Callable[[dict], None],
        on_swap: Callable[[Snapshot], None],
        poll_interval_s: float = 0.2,
    ):
        self.name = name
        self.store = store
        self.compiled = CompiledVersions(providers)
        self.on_event = on_event  # writes a replica event into the audit chain
        self.on_swap = on_swap  # engine-side work for a new snapshot (cache fence, fsync policy)
        self.poll_interval_s = poll_interval_s
        self.snapshot: Snapshot | None = None
        self.applied_change = 0
        self.started_at = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_heartbeat = 0.0

    def start(self) -> None:
        """Applies the current state before returning, so the replica never serves empty."""
        self.on_event({"kind": "replica", "event": "started", "pid": os.getpid()})
        self.sync()
        self._thread = threading.Thread(target=self._run, name=f"agent-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self.store.remove_replica(self.name)
        self.on_event({"kind": "replica", "event": "stopped"})

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            try:
                self.sync()
            except Exception:  # the agent must outlive any single failure
                log.exception("replica agent: sync failed; keeping the current snapshot")

    def sync(self) -> None:
        """Applies every change after the last one applied, then heartbeats."""
        last = self.store.last_change_id()
        if last > self.applied_change:
            self._apply(last)
        now = time.time()
        if now - self._last_heartbeat >= HEARTBEAT_S:
            self._heartbeat(now)

    def _apply(self, last: int) -> None:
        pending = [c.id for c in self.store.changes(since_id=self.applied_change)]
        try:
            snap = snapshots.build(last, self.store.pointers(), self.compiled, self._load)
        except (DocumentError, IncompleteState, ValueError) as exc:
            error = str(exc)
            log.error("replica %s refuses change %s: %s", self.name, last, error)
            self.on_event({"kind": "replica", "event": "refused", "change": last, "error": error})
            self._answer(pending, ok=False, error=error)
            self.applied_change = last  # refused: wait for the next change, keep serving
            return
        previous = self.snapshot
        self.snapshot = snap
        self.on_swap(snap)
        self.applied_change = last
        self.on_event(
            {
                "kind": "replica",
                "event": "applied",
                "change": last,
                "versions": snap.versions(),
                "previous": previous.versions() if previous else None,
            }
        )
        self._answer(pending, ok=True, error="")
        self._heartbeat(time.time())

    def _answer(self, change_ids: list[int], ok: bool, error: str) -> None:
        now = time.time()
        for change_id in change_ids:
            self.store.ack(Ack(change_id, self.name, ok, error, now))

    def _heartbeat(self, now: float) -> None:
        self._last_heartbeat = now
        versions = self.snapshot.versions() if self.snapshot else {}
        self.store.heartbeat(
            Replica(self.name, os.getpid(), socket.gethostname(), self.started_at, now, self.applied_change, versions)
        )

    def _load(self, domain: str, version: int) -> tuple[str, bytes]:
        found = self.store.version(domain, version)
        if found is None:
            raise DocumentError(f"{domain} version {version} is missing from the store")
        info, data = found
        return info.name, data
