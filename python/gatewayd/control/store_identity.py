"""Recognising a control store that lost its data (docs/ROLLBACK.md R17).

A store carries an identity (an epoch) written with its first versions. Replicas and tools
remember a watermark: the epoch and how far its history went. A store found without that
epoch, with another one, or behind the watermark would hand out version and change ids
that already name other documents and changes, so nothing is written to it and replicas
keep serving their last-known-good state until it is restored (docs/STORE.md).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import time
from pathlib import Path

import msgspec

from gatewayd.control.last_known_good import LastKnownGood
from gatewayd.control.model import Replica, StoreHead, StoreIdentity, Watermark

RESTORE_HINT = "Restore it: gatewayd store restore (docs/STORE.md)"
MARK_FILE = "store-mark.json"


def new_identity(at: float | None = None) -> StoreIdentity:
    return StoreIdentity(secrets.token_hex(16), time.time() if at is None else at)


def advance(mark: Watermark | None, head: StoreHead) -> Watermark | None:
    """The watermark after seeing `head` (of the same epoch, or a first sight)."""
    if head.identity is None:
        return mark
    seen = Watermark(head.identity.epoch, head.identity.created_at, head.last_change, dict(head.last_versions))
    return merge([mark, seen] if mark else [seen])


def merge(marks: list[Watermark | None]) -> Watermark | None:
    """The furthest of each field over the newest epoch among `marks` (None when empty)."""
    present = [m for m in marks if m is not None]
    if not present:
        return None
    newest = max(present, key=lambda m: m.created_at)
    same = [m for m in present if m.epoch == newest.epoch]
    versions: dict[str, int] = {}
    for m in same:
        for domain, last in m.last_versions.items():
            versions[domain] = max(versions.get(domain, 0), last)
    return Watermark(newest.epoch, newest.created_at, max(m.last_change for m in same), versions)


def judge(head: StoreHead, mark: Watermark | None, where: str) -> str | None:
    """What the store lost against the watermark, in one line; None when it is whole."""
    if mark is None:
        return None
    missing = _missing(head, mark)
    created = _iso(mark.created_at)
    if head.identity is None:
        return (
            f"control store at {where} has lost its data: epoch {mark.epoch} (created {created}) "
            f"is gone and {missing} are missing"
        )
    if head.identity.epoch != mark.epoch:
        return (
            f"control store at {where} holds another store's data: epoch {head.identity.epoch} (created "
            f"{_iso(head.identity.created_at)}) instead of {mark.epoch} (created {created}), so {missing} are missing"
        )
    behind = head.last_change < mark.last_change or any(
        head.last_versions.get(domain, 0) < last for domain, last in mark.last_versions.items()
    )
    if behind:
        return f"control store at {where} has gone back in time: epoch {mark.epoch} is there but {missing} are missing"
    return None


def lost_error_message(problem: str, action: str) -> str:
    return f"{problem}; refusing to {action}. {RESTORE_HINT}"


class StoreMemory:
    """What this host has seen of the control store: the operator tools' own watermark
    (`<control dir>/store-mark.json`), the replicas' last-known-good files in the same
    directory, and the watermarks every replica heartbeats (they outlive a wiped store)."""

    def __init__(self, state_dir: Path | None):
        self.state_dir = state_dir

    def recall(self, replicas: list[Replica]) -> Watermark | None:
        """The furthest this host has seen: its own file, its replicas' last-known-good
        archives, and the marks `replicas` heartbeated."""
        marks = [self._own(), *self._last_known_good()]
        marks += [r.mark for r in replicas]
        return merge(marks)

    def note(self, head: StoreHead) -> None:
        """Remembers `head` if it goes further than the file does (never backwards)."""
        if self.state_dir is None or head.identity is None:
            return
        own = self._own()
        mark = advance(own if own is not None and own.epoch == head.identity.epoch else None, head)
        if mark == own:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / MARK_FILE
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(msgspec.json.encode(mark))
        os.replace(tmp, path)

    def _own(self) -> Watermark | None:
        if self.state_dir is None:
            return None
        return _read_mark(self.state_dir / MARK_FILE)

    def _last_known_good(self) -> list[Watermark | None]:
        if self.state_dir is None:
            return []
        return [saved.mark for saved in LastKnownGood.all_in(self.state_dir)]


def _read_mark(path: Path) -> Watermark | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=Watermark)
    except (FileNotFoundError, msgspec.DecodeError):
        return None


def _missing(head: StoreHead, mark: Watermark) -> str:
    """'policy versions up to 2, routing up to 1 and changes up to 7' (what the store lacks)."""
    parts = []
    for domain, last in sorted(mark.last_versions.items()):
        if head.last_versions.get(domain, 0) < last or head.identity is None or head.identity.epoch != mark.epoch:
            parts.append(f"{domain} up to {last}")
    if parts:
        parts[0] = parts[0].replace(" up to ", " versions up to ", 1)
    parts.append(f"changes up to {mark.last_change}")
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
