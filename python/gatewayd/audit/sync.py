"""The `interval` and `group` fsync policies of one replica, run off its event loop.

Every audit record reaches the kernel before its response completes, whatever the policy;
the policy decides when it reaches the disk (docs/AUDIT.md has the measured costs):

* ``never``: at segment rotation, checkpoints and shutdown only;
* ``interval``: a timer syncs every ``fsync_interval_ms`` when records are unsynced;
* ``group``: a response waits until an fsync covers its record; one fsync is in flight at
  a time and covers every record written before it started, so concurrent requests share
  it (group commit) and appends go on while it runs;
* ``always``: the append itself syncs (in Rust, on the request path).

The policy lives in the engine (set from the versioned config), so it is read on each use.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from gatewayd.errors import AuditError

log = logging.getLogger("gatewayd.audit")

IDLE_POLL_S = 0.2  # how often the timer looks again when the policy is not `interval`
# The policies under which a response waits until its record is on disk (under `always`
# the append synced it already).
SYNCED_BEFORE_ANSWER = frozenset({"group", "always"})


class AuditSync:
    def __init__(self, engine):
        self.engine = engine
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="audit-fsync")
        self._flight: asyncio.Future | None = None
        self._timer: asyncio.Task | None = None

    def start(self) -> None:
        """Starts the interval timer; call from the event loop."""
        self._timer = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        if self._timer:
            self._timer.cancel()
        await self._sync()
        self._pool.shutdown()

    async def durable(self, seq: int, policy: str | None = None) -> None:
        """Returns once record `seq` is on stable storage when `policy` makes a response
        wait for it (SYNCED_BEFORE_ANSWER); at once otherwise. A request passes the policy
        of its own snapshot (docs/ROLLBACK.md R6), else the engine's current one is used."""
        engine_policy, _, _, synced = self.engine.audit_sync_state()
        if (policy or engine_policy) not in SYNCED_BEFORE_ANSWER:
            return
        while synced < seq:
            synced = await self._sync()

    async def _sync(self) -> int:
        """Joins the fsync in flight, or starts one; returns the seq it made durable. A
        flight that has landed is never joined again: awaiting a finished future does not
        yield, so a waiter it did not cover would spin."""
        if self._flight is None or self._flight.done():
            self._flight = asyncio.get_running_loop().run_in_executor(self._pool, self.engine.sync_audit)
        return await asyncio.shield(self._flight)

    async def _tick(self) -> None:
        while True:
            policy, interval_ms, head, synced = self.engine.audit_sync_state()
            if policy == "interval" and head > synced:
                try:
                    await self._sync()
                except AuditError:  # the writer is poisoned: every later append fails loudly
                    log.exception("audit fsync failed")
            await asyncio.sleep(interval_ms / 1000 if policy == "interval" else IDLE_POLL_S)
