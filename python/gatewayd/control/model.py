"""Control-plane records, shared by every store backend and the CLI."""

from __future__ import annotations

import msgspec

DEFAULT_SCOPE = "default"
# The policy pointer of this scope names a candidate run in shadow mode, not enforced (R15).
SHADOW_SCOPE = "shadow"


class VersionInfo(msgspec.Struct, frozen=True):
    """An immutable document version (ROLLBACK.md R1); `document` is the bytes as pushed."""

    domain: str
    id: int
    digest: str
    name: str
    created_at: float
    actor: str
    reason: str


class ChangeItem(msgspec.Struct, frozen=True):
    """One pointer moved by a change: `prev` and `new` are version ids (None: unset)."""

    domain: str
    scope: str
    prev: int | None
    new: int | None


class Change(msgspec.Struct, frozen=True):
    """A change record (R2): every pointer flip, with who, when and why."""

    id: int
    at: float
    actor: str
    reason: str
    kind: str  # bootstrap | activate | rollback | bundle
    items: list[ChangeItem]


class Ack(msgspec.Struct, frozen=True):
    """A replica's answer to a change: applied (ok) or refused with the error (R4)."""

    change_id: int
    replica: str
    ok: bool
    error: str
    at: float


class Replica(msgspec.Struct, frozen=True):
    name: str
    pid: int
    host: str
    started_at: float
    heartbeat_at: float
    applied_change: int
    versions: dict[str, int]


class Pointer(msgspec.Struct, frozen=True):
    domain: str
    scope: str
    version: int
    change_id: int


class ConflictError(Exception):
    """A compare-and-set lost: the pointer moved since the caller read it."""

    @classmethod
    def moved(cls, domain: str, scope: str, current: int | None, expected: int | None) -> ConflictError:
        return cls(f"{domain}/{scope} moved to version {current} (expected {expected}); re-read and try again")


class StoreUnavailableError(Exception):
    """The control store did not answer. A write may or may not have landed: re-read first."""
