"""The replica agent: keeps one serving process in step with the store's pointers.

It runs in a thread of its own so control work (fetching, compiling) never stalls the
event loop that serves requests. On each change it compiles the pointed-to versions,
fences the cache to the new version sets (R5), swaps the snapshot atomically (R6), writes
the boundary into the audit chain, and acknowledges the change, or refuses it with the
error and keeps serving its last good snapshot (R4).

Notifications are hints (R16): the agent re-reads the pointers whenever its subscription
says so (a message, or a reconnect) and at least every `resync_interval_s`. With the store
unreachable it keeps serving, and starts from its last-known-good state after a restart.

It remembers the store's epoch and how far its history went (R17). A store found empty,
with another epoch or behind that watermark is held at arm's length: the replica keeps
its last good snapshot, applies and acknowledges nothing from it, and heartbeats its
watermark so every operator tool sees what was lost, until the store is restored.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

import msgspec

from gatewayd.control import auto_revert, documents, store_identity
from gatewayd.control import snapshot as snapshots
from gatewayd.control.barrier import LIVE_WITHIN_S
from gatewayd.control.documents import DocumentError
from gatewayd.control.history import RollbackStacks
from gatewayd.control.keys import KEY_CHANGE, RuntimeKey
from gatewayd.control.last_known_good import LastKnownGood
from gatewayd.control.model import (
    Ack,
    ChangeItem,
    ConflictError,
    Pointer,
    Replica,
    StoredVersion,
    StoreLostError,
    StoreUnavailableError,
    Watermark,
)
from gatewayd.control.snapshot import CompiledVersions, IncompleteState, Snapshot
from gatewayd.errors import AuditError

log = logging.getLogger("gatewayd.agent")

HEARTBEAT_S = 1.0


class ReplicaAgent:
    def __init__(
        self,
        name: str,
        store,
        providers: list[tuple[str, str]],
        lkg: LastKnownGood,
        on_event: Callable[[dict], object],  # its result is ignored
        on_swap: Callable[[Snapshot], None],
        after_answer: Callable[[], None] = lambda: None,
        resync_interval_s: float = 2.0,
        traffic: Callable[[], bytes] | None = None,
        on_keys: Callable[[list[RuntimeKey]], None] | None = None,
    ):
        self.name = name
        self.store = store
        # The engine's request metrics (JSON): this replica's traffic by position, sent with
        # its heartbeats for canaries' automatic revert rules (R13).
        self.traffic = traffic
        self.judge = auto_revert.Judge()
        self.pointers: list[Pointer] = []  # those of the snapshot served
        self.lkg = lkg
        self.compiled = CompiledVersions(providers)
        # Where a rollback of each domain and scope would return: kept compiled (R7).
        self.stacks = RollbackStacks()
        self.on_event = on_event  # writes a replica event into the audit chain
        self.on_swap = on_swap  # engine-side work for a new snapshot (cache fence, fsync policy)
        # Slow boundary work (a signed checkpoint) runs after the acknowledgement, so it
        # never holds up the propagation barrier.
        self.after_answer = after_answer
        self.resync_interval_s = resync_interval_s
        # Serves a new run-time key table: at the first change applied, and at every change
        # of kind `key` (a key created or revoked), before that change is acknowledged.
        self.on_keys = on_keys
        self.snapshot: Snapshot | None = None
        self.applied_change = 0
        self.started_at = time.time()
        self.counters = {
            "changes_applied": 0,
            "changes_refused": 0,
            "store_lost": 0,
            "resyncs": 0,
            "audit_events_lost": 0,
        }
        self.store_lost = False
        self.mark: Watermark | None = None  # the store's epoch and how far its history went, as seen here
        self._saved_mark: Watermark | None = None  # the watermark in the last-known-good file
        self.holding = ""  # why the store is not trusted (it lost its data); empty: it is
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_heartbeat = 0.0
        self.live_replicas = 1  # replicas with a recent heartbeat, this one included

    def start(self) -> None:
        """Applies the current state before returning, so the replica never serves empty:
        from the store, or from the last-known-good state when the store is unreachable."""
        self._event({"kind": "replica", "event": "started", "pid": os.getpid()})
        saved = self.lkg.load()
        self.mark = self._saved_mark = saved.mark if saved else None
        try:
            self.sync()
        except StoreUnavailableError as exc:
            self._lost(exc)
            self._start_from_last_known_good()
        self._thread = threading.Thread(target=self._run, name=f"agent-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        try:
            self.store.remove_replica(self.name)
        except StoreUnavailableError:
            pass
        self._event({"kind": "replica", "event": "stopped"})

    def _run(self) -> None:
        subscription = self.store.subscribe()
        try:
            while not self._stop.is_set():
                subscription.wait(min(self.resync_interval_s, HEARTBEAT_S))
                if self._stop.is_set():
                    return
                try:
                    self.sync()
                except StoreUnavailableError as exc:
                    self._lost(exc)
                except Exception:  # the agent must outlive any single failure
                    log.exception("replica %s: sync failed; keeping the current snapshot", self.name)
        finally:
            subscription.close()

    def sync(self) -> None:
        """Applies every change after the last one applied, then heartbeats; with a store
        that lost its data, only heartbeats."""
        head = self.store.head()
        last = head.last_change
        if self.store_lost:
            self.store_lost = False
            self.counters["resyncs"] += 1
            self._event({"kind": "replica", "event": "resynced", "change": last})
            log.warning("replica %s: control store is back; resynced at change %d", self.name, last)
        problem = store_identity.judge(head, self.mark, self.store.where)
        if problem:
            self._hold(problem)
        else:
            self._trust(last)
            self.mark = store_identity.advance(self.mark, head)
            if last != self.applied_change:
                self._apply(last)
            if self.mark is not None and self.mark != self._saved_mark:
                self.lkg.save_mark(self.mark)
                self._saved_mark = self.mark
        now = time.time()
        if now - self._last_heartbeat >= HEARTBEAT_S:
            self._heartbeat(now)

    def _hold(self, problem: str) -> None:
        """Fail static on a store that lost its data: keep (or start from) the last good
        snapshot, and acknowledge nothing (R17)."""
        if not self.holding:
            self.counters["store_lost"] += 1
            self._event({"kind": "replica", "event": "store_lost_data", "error": problem})
            log.error("replica %s: %s; serving its last-known-good state, acknowledging nothing", self.name, problem)
        self.holding = problem
        if self.snapshot is None:
            self._start_from_last_known_good()

    def _trust(self, last: int) -> None:
        if self.holding:
            self.holding = ""
            self._event({"kind": "replica", "event": "store_restored", "change": last})
            log.warning(
                "replica %s: control store is whole again (restored); following it from change %d", self.name, last
            )

    def _apply(self, last: int) -> None:
        pending = [c for c in self.store.changes(since_id=self.applied_change) if c.id <= last]
        self._record_changes(pending)
        for change in pending:
            self.stacks.apply(change)
        pointers = self.store.pointers()
        compiles = self.compiled.compiles
        try:
            snap = snapshots.build(last, pointers, self.compiled, self._load)
        except (DocumentError, IncompleteState, ValueError) as exc:
            error = str(exc)
            log.error("replica %s refuses change %s: %s", self.name, last, error)
            self.counters["changes_refused"] += 1
            self._event({"kind": "replica", "event": "refused", "change": last, "error": error})
            self._answer([c.id for c in pending], ok=False, error=error)
            self.applied_change = last  # refused: keep serving, wait for the next change
            self.after_answer()
            return
        self._swap(snap, compiled=self.compiled.compiles - compiles)
        if self.on_keys is not None and (self.counters["changes_applied"] == 0 or _moves_keys(pending)):
            self._load_keys()
        self.pointers = pointers
        self.lkg.save(snap.change_id, pointers, self._fetch, self.mark)
        self._saved_mark = self.mark
        self.counters["changes_applied"] += 1
        self._answer([c.id for c in pending], ok=True, error="")
        self._heartbeat(time.time())
        self._warm(pointers)
        self.after_answer()

    def _warm(self, pointers: list) -> None:
        """Compiles the version a rollback of each pointer would return to, after the
        acknowledgement (so it never delays the barrier), before any rollback asks (R7)."""
        for p in pointers:
            previous = self.stacks.previous(p.domain, p.scope)
            if previous is not None:
                self.compiled.warm(p.domain, previous, self._load)

    def _record_changes(self, changes: list) -> None:
        """The change records themselves go into this replica's audit chain, right before
        the boundary they cause, so the chain alone tells who changed what, when and why."""
        for change in changes:
            self._event(
                {
                    "kind": "change",
                    "change": change.id,
                    "at": change.at,
                    "actor": change.actor,
                    "reason": change.reason,
                    "change_kind": change.kind,
                    "items": [_item_fields(i) for i in change.items],
                }
            )

    def _swap(self, snap: Snapshot, compiled: int = 0) -> None:
        """`compiled`: how many documents applying it had to compile (0 when every version
        was warm, as a rollback's should be)."""
        previous = self.snapshot
        self.snapshot = snap
        self.on_swap(snap)
        self.applied_change = snap.change_id
        self._event(
            {
                "kind": "replica",
                "event": "applied",
                "change": snap.change_id,
                "versions": snap.versions(),
                "previous": previous.versions() if previous else None,
                "compiled": compiled,
            }
        )

    def _load_keys(self) -> None:
        """Reads the run-time keys from the store and serves them; kept beside the
        last-known-good state, so a replica restarted with the store down still knows them."""
        assert self.on_keys is not None
        keys = self.store.runtime_keys()
        self.on_keys(keys)
        self.lkg.save_keys(keys)

    def _start_from_last_known_good(self) -> None:
        state = self.lkg.load()
        if state is None or not state.pointers:
            raise RuntimeError(
                f"replica {self.name}: the control store is unreachable or lost its data and there is no "
                f"last-known-good state in {self.lkg.path}; cannot serve"
            )
        docs = state.document_map()
        snap = snapshots.build(state.change_id, state.pointers, self.compiled, lambda d, v: docs[(d, v)])
        self._swap(snap)
        if self.on_keys is not None:
            self.on_keys(self.lkg.load_keys())
        log.warning("replica %s: serving last-known-good change %d until the store returns", self.name, state.change_id)

    def _lost(self, exc: Exception) -> None:
        if not self.store_lost:
            self.store_lost = True
            self.counters["store_lost"] += 1
            self._event({"kind": "replica", "event": "store_lost", "error": str(exc)})
            log.error("replica %s: %s; serving the last good snapshot", self.name, exc)

    def _event(self, fields: dict) -> None:
        """Writes a replica event into the audit chain. A chain that cannot be written must
        not freeze the control plane (a kill switch has to land even then): the failure is
        logged and counted, and the request path applies `audit.on_failure`."""
        try:
            self.on_event(fields)
        except AuditError as exc:
            self.counters["audit_events_lost"] += 1
            what = fields.get("event") or fields.get("kind")
            log.error("replica %s: could not write its %s event to the audit chain: %s", self.name, what, exc)

    def _answer(self, change_ids: list[int], ok: bool, error: str) -> None:
        now = time.time()
        for change_id in change_ids:
            self.store.ack(Ack(change_id, self.name, ok, error, now))

    def _heartbeat(self, now: float) -> None:
        """Tells the store this replica is alive, and counts who else is (cluster-wide rate
        limits share by that count)."""
        self._last_heartbeat = now
        versions = self.snapshot.versions() if self.snapshot else {}
        traffic = auto_revert.traffic_by_position(self.traffic(), self.pointers) if self.traffic else {}
        self.store.heartbeat(
            Replica(
                self.name,
                os.getpid(),
                socket.gethostname(),
                self.started_at,
                now,
                self.applied_change,
                versions,
                self.mark,
                traffic,
            )
        )
        live = [r for r in self.store.replicas() if r.heartbeat_at >= now - LIVE_WITHIN_S]
        self.live_replicas = max(1, len(live))  # this replica's own heartbeat is among them
        if not self.holding and self.mark is not None:
            for verdict in self.judge.verdicts(self.pointers, live, now):
                self._revert(verdict, self.mark.epoch)

    def _revert(self, verdict: auto_revert.Verdict, epoch: str) -> None:
        """Holds the candidate at 0 % by actor `auto` (R13); another replica that saw the
        same first wins the compare-and-set, and this one lets it."""
        p = verdict.pointer
        assert p.candidate is not None
        held = msgspec.structs.replace(p.candidate, share=0)
        item = ChangeItem(p.domain, p.scope, p.version, p.version, p.candidate, held)
        try:
            change = self.store.flip([item], "auto", verdict.reason, "canary", epoch=epoch)
        except (ConflictError, StoreLostError):
            return
        log.warning("replica %s: %s/%s candidate v%d held at 0%% (change %d): %s",
                    self.name, p.domain, p.scope, p.candidate.version, change.id, verdict.reason)  # fmt: skip

    def _load(self, domain: str, version: int) -> tuple[str, bytes]:
        stored = self._fetch(domain, version)
        return stored.info.name, stored.document

    def _fetch(self, domain: str, version: int) -> StoredVersion:
        found = self.store.version(domain, version)
        if found is None:
            raise DocumentError(f"{domain} version {version} is missing from the store")
        info, data = found
        if documents.digest(data) != info.digest:  # never serve bytes the registry did not store
            raise DocumentError(f"{domain} version {version}: content does not match its digest {info.digest}")
        return StoredVersion(info, data)


def _moves_keys(changes: list) -> bool:
    return any(change.kind == KEY_CHANGE for change in changes)


def _item_fields(item) -> list:
    """[domain, scope, prev, new], plus the candidate before and after as [version, share]
    when either is set."""
    fields = [item.domain, item.scope, item.prev, item.new]
    if item.prev_candidate or item.candidate:
        fields += [_pair(item.prev_candidate), _pair(item.candidate)]
    return fields


def _pair(candidate) -> list | None:
    return [candidate.version, candidate.share] if candidate else None
