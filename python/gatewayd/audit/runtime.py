"""One replica's audit machinery beside its engine: fsync scheduling, and (when a signing
key is configured) checkpoints and retention."""

from __future__ import annotations

import logging

from gatewayd import _core, config
from gatewayd.audit.checkpoints import Checkpointer
from gatewayd.audit.keys import Signer
from gatewayd.audit.sync import AuditSync

log = logging.getLogger("gatewayd.audit")


class AuditRuntime:
    def __init__(self, engine, settings: config.Settings):
        self.engine = engine
        self.sync = AuditSync(engine)
        a = settings.audit
        self.checkpointer = None
        if a.signing_key:
            signer = Signer.load(settings.path(a.signing_key), a.origin)
            self.checkpointer = Checkpointer(engine, signer, a.checkpoint_interval_s, a.retain_days, a.retain_bytes)
        opened = engine.audit_opened()
        if opened["torn_tail"]:
            segment, offset, cut = opened["torn_tail"]
            log.warning("audit chain: cut a torn write of %d bytes at byte %d of %s", cut, offset, segment)
        if opened["checkpoint"] is not None:
            log.info("audit chain re-verified from its checkpoint at size %d", opened["checkpoint"])

    def start(self) -> None:
        """Call from the event loop, before serving."""
        self.sync.start()
        if self.checkpointer:
            self.checkpointer.start()

    def boundary(self) -> None:
        """Signs the chain at a change boundary (R8: every rollback is visible and signed),
        right after the replica answered the change."""
        if self.checkpointer:
            self.checkpointer.checkpoint()

    async def durable(self, seq: int, policy: str | None = None) -> None:
        await self.sync.durable(seq, policy)

    async def stop(self) -> None:
        await self.sync.stop()
        if self.checkpointer:
            self.checkpointer.stop()
        # The segment on disk ends with its last record, as a stopped chain's should (left
        # as it is, readers stop at the reserve and the next start cuts it).
        try:
            self.engine.release_audit_reserve()
        except _core.AuditError as exc:
            log.warning("audit chain: the space reserved past the last record stays: %s", exc)
