"""The console's live view: one poller and one sampler per admin process, whatever the
number of consoles open. The poller reads the control store a few times a second while
someone watches and sends a snapshot only when it changed; the sampler reads the replicas'
metrics files every few seconds, always, so the 15-minute chart has history the moment
an SRE opens the page. Every console gets the same encoded bytes (server-sent events)."""

from __future__ import annotations

import asyncio
import collections
import logging
import sqlite3
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from gatewayd.control import overview
from gatewayd.control.history import RollbackStacks
from gatewayd.control.model import Candidate, Change
from gatewayd.errors import GatewaydError
from gatewayd.server import metrics as replica_metrics

if TYPE_CHECKING:
    from gatewayd.control.registry import Registry

log = logging.getLogger("gatewayd.admin")

POLL_S = 0.2  # the store, while at least one console watches
SAMPLE_S = 5.0  # the replicas' metrics files, always
WINDOW_S = 900.0  # the chart: the last 15 minutes
KEEPALIVE_S = 15.0  # a comment line keeps proxies from closing an idle stream
QUEUE_DEPTH = 4  # snapshots are whole states: a slow console skips to the latest


class PointerView(msgspec.Struct, frozen=True):
    domain: str
    scope: str
    previous: int | None  # where a rollback returns to
    current: int
    candidate: Candidate | None
    change_id: int


class ReplicaView(msgspec.Struct, frozen=True):
    name: str
    host: str
    pid: int
    state: str  # in sync | stale | gone | static
    applied_change: int
    heartbeat_at: float  # epoch seconds: the page ages it, so a snapshot changes only on news
    versions: dict[str, int]


class AckView(msgspec.Struct, frozen=True):
    replica: str
    ok: bool
    error: str
    after_ms: float


class LiveStatus(msgspec.Struct, frozen=True):
    pointers: list[PointerView]
    replicas: list[ReplicaView]
    last_change: Change | None
    acks: list[AckView]  # of the last change, as they arrive
    store_problem: str


class RateSeries(msgspec.Struct, frozen=True):
    label: str  # "policy v2 · routing v1 · config v1", with the candidate's domains
    rps: list[float | None]  # one per sample; None: this version set served nothing then
    error_rate: list[float | None]  # 5xx share


class Rates(msgspec.Struct, frozen=True):
    sample_s: float
    t: list[float]
    series: list[RateSeries]


class _Memo:
    """What changes only with a new change record: where each rollback would return to."""

    def __init__(self) -> None:
        self.change_id = -1
        self.stacks = RollbackStacks()


def read_status(registry: Registry, memo: _Memo) -> LiveStatus:
    status = overview.status(registry)
    last = status.last_change
    if memo.change_id != (last.id if last else 0):
        memo.stacks = RollbackStacks(registry.history())
        memo.change_id = last.id if last else 0
    now = time.time()
    pointers = [
        PointerView(p.domain, p.scope, memo.stacks.previous(p.domain, p.scope), p.version, p.candidate, p.change_id)
        for p in status.pointers
    ]
    replicas = [
        ReplicaView(r.name, r.host, r.pid, r.state, r.applied_change, round(now - r.heartbeat_age_s, 1), r.versions)
        for r in status.replicas
    ]
    acks = []
    if last is not None:
        acks = [
            AckView(a.replica, a.ok, a.error, round((a.at - last.at) * 1000, 1))
            for a in sorted(registry.acks(last.id), key=lambda a: a.at)
        ]
    return LiveStatus(pointers, replicas, last, acks, status.store_problem)


class RateHistory:
    """Requests per second and error rate per version set, from the deltas between samples
    of each replica's counters (a restarted replica's counters start again from 0)."""

    def __init__(self, folder: replica_metrics.MetricsDir):
        self.folder = folder
        self._last: dict[str, dict[tuple[int, int, int, int], tuple[int, int]]] = {}
        self._last_at: float | None = None  # no read yet: the first is only a baseline
        self.samples: collections.deque[tuple[float, dict[str, tuple[float, float]]]] = collections.deque(
            maxlen=int(WINDOW_S / SAMPLE_S)
        )

    def sample(self, now: float) -> None:
        counts = {m.replica: replica_metrics.request_counts(m) for m in self.folder.read_all()}
        if self._last_at is not None:
            elapsed = max(now - self._last_at, 1e-3)
            deltas: dict[str, list[int]] = {}
            for replica, by_versions in counts.items():
                before = self._last.get(replica, {})
                for versions, (requests, errors) in by_versions.items():
                    old_requests, old_errors = before.get(versions, (0, 0))
                    if requests < old_requests:  # the replica restarted
                        old_requests, old_errors = 0, 0
                    acc = deltas.setdefault(_label(versions), [0, 0])
                    acc[0] += requests - old_requests
                    acc[1] += errors - old_errors
            point = {label: (n / elapsed, (e / n if n else 0.0)) for label, (n, e) in deltas.items() if n}
            self.samples.append((now, point))
        self._last, self._last_at = counts, now

    def rates(self) -> Rates:
        labels = sorted({label for _, point in self.samples for label in point})
        series = []
        for label in labels:
            rps = [round(p[label][0], 3) if label in p else None for _, p in self.samples]
            errors = [round(p[label][1], 4) if label in p else None for _, p in self.samples]
            series.append(RateSeries(label, rps, errors))
        return Rates(SAMPLE_S, [round(t, 1) for t, _ in self.samples], series)


def _label(versions: tuple[int, int, int, int]) -> str:
    policy, routing, config, bits = versions
    label = f"policy v{policy} · routing v{routing} · config v{config}"
    return label if not bits else f"{label} ({replica_metrics.candidate_label(bits)} candidate)"


class Hub:
    """Fans the live state out to every open console."""

    def __init__(self, read: Callable[[Callable[[Registry], LiveStatus]], Awaitable[LiveStatus]], metrics_dir: Path):
        self._read = read  # runs store work in a worker thread (AdminApi._run)
        self._memo = _Memo()
        self.history = RateHistory(replica_metrics.MetricsDir(metrics_dir))
        self._watchers: set[asyncio.Queue[bytes]] = set()
        self._status_event = b""
        self._rates_event = b""
        self._poller: asyncio.Task | None = None
        self._sampler: asyncio.Task | None = None
        self.polls = 0  # store reads made for the live view: what the bench reports

    def start(self) -> None:
        self._sampler = asyncio.ensure_future(self._sample_forever())

    def stop(self) -> None:
        for task in (self._poller, self._sampler):
            if task is not None:
                task.cancel()

    async def events(self, receive, allowed: Callable[[], bool]) -> AsyncGenerator[bytes, None]:
        """One console's stream until it goes away or its session ends (`allowed` turns false)."""
        queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_DEPTH)
        for event in (self._status_event, self._rates_event):
            if event:
                queue.put_nowait(event)
        self._watchers.add(queue)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.ensure_future(self._poll())
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            yield b"retry: 2000\n\n"
            while allowed():
                item = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({item, gone}, timeout=KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED)
                if gone in done:
                    item.cancel()
                    return
                if item in done:
                    yield item.result()
                else:
                    item.cancel()
                    yield b": keepalive\n\n"
        finally:
            gone.cancel()
            self._watchers.discard(queue)

    def _broadcast(self, event: bytes) -> None:
        for queue in self._watchers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    async def _poll(self) -> None:
        problem = ""
        while self._watchers:
            try:
                state = await self._read(lambda registry: read_status(registry, self._memo))
                problem = ""
                event = b"event: status\ndata: " + msgspec.json.encode(state) + b"\n\n"
                if event != self._status_event:
                    self._status_event = event
                    self._broadcast(event)
            except Exception as exc:  # the store is down or restarting: say so, keep trying
                if not isinstance(exc, GatewaydError | OSError | sqlite3.Error):
                    log.exception("live view: reading the state failed")
                said = f"control store unavailable: {exc}".splitlines()[0]
                if said != problem:
                    problem = said
                    log.warning("live view: %s", said)
                    self._broadcast(b"event: problem\ndata: " + msgspec.json.encode({"message": said}) + b"\n\n")
                self._status_event = b""  # resend the state once the store answers again
            self.polls += 1
            await asyncio.sleep(POLL_S)

    async def _sample_forever(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.history.sample, time.time())
                self._rates_event = b"event: rates\ndata: " + msgspec.json.encode(self.history.rates()) + b"\n\n"
                self._broadcast(self._rates_event)
            except Exception:
                log.exception("live view: sampling the replicas' metrics failed")
            await asyncio.sleep(SAMPLE_S)


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
