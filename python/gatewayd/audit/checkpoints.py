"""Signed checkpoints of a replica's chain, and the retention they make safe.

A checkpoint is the chain's synced Merkle tree head, signed as a C2SP tlog-checkpoint and
written to ``<audit dir>/<chain>/checkpoints/<size>.note``; a ``checkpoint`` record in the
chain then names it. They are taken every ``audit.checkpoint_interval_s`` when records were
added, at every change boundary (the agent calls :func:`checkpoint` after applying or
refusing a change), and at shutdown.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import NamedTuple

import msgspec

from gatewayd.audit import note
from gatewayd.audit.keys import Signer

log = logging.getLogger("gatewayd.audit")


class Signed(NamedTuple):
    note: Path
    size: int
    record_seq: int | None  # the `checkpoint` record; None if this head was signed already


def checkpoint(engine, signer: Signer) -> Signed:
    """Signs the current tree head of `engine`'s chain (synced first), writes its note and
    records it in the chain. Safe to call from any thread."""
    size, body = engine.audit_checkpoint(signer.origin)
    path = Path(engine.audit_dir()) / "checkpoints" / f"{size}.note"
    if path.exists():
        return Signed(path, size, None)
    _write_durably(path, note.sign(body, signer).encode())
    root = body.splitlines()[2]
    key = f"{signer.name}+{signer.verifier.id.hex()}"
    seq = engine.event(msgspec.json.encode({"kind": "checkpoint", "size": size, "root": root, "key": key}))
    return Signed(path, size, seq)


def _write_durably(path: Path, data: bytes) -> None:
    """Temp file, fsync, rename, fsync the directory: the note is whole or absent."""
    path.parent.mkdir(exist_ok=True)
    temp = path.with_suffix(".tmp")
    with open(temp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Checkpointer:
    """Keeps one replica's chain signed: a checkpoint every `interval_s` if records were
    added, one on request (change boundaries), one at stop; retention after signing."""

    def __init__(self, engine, signer: Signer, interval_s: float, retain_days: float = 0.0, retain_bytes: int = 0):
        self.engine = engine
        self.signer = signer
        self.interval_s = interval_s
        self.retain_age_s = retain_days * 86400.0
        self.retain_bytes = retain_bytes
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._signed_through = -1  # seq of the last checkpoint record written here

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="audit-checkpoints", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        self.checkpoint()

    def checkpoint(self) -> Signed | None:
        """Signs the chain's head unless nothing but the last checkpoint record was added."""
        with self._lock:
            if self.engine.audit_head()[0] == self._signed_through:
                return None
            signed = checkpoint(self.engine, self.signer)
            if signed.record_seq is not None:
                self._signed_through = signed.record_seq
            return signed

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.checkpoint()
                self._retain()
            except Exception:  # keep signing later; the failure is logged loudly
                log.exception("audit checkpoint failed")

    def _retain(self) -> None:
        if not (self.retain_age_s or self.retain_bytes):
            return
        plan = self.engine.audit_plan_retention(self.retain_age_s, self.retain_bytes)
        if plan is None:
            return
        self.checkpoint()  # pins the first kept record, and the retention record itself
        removed = self.engine.audit_apply_retention(plan)
        log.info(
            "audit retention removed %d segment(s), %d bytes, before seq %d",
            removed,
            plan.bytes,
            plan.first_seq,
        )
