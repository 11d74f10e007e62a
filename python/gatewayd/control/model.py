"""Control-plane records, shared by every store backend and the CLI."""

from __future__ import annotations

import msgspec

from gatewayd.control.keys import RuntimeKey
from gatewayd.errors import (  # noqa: F401 (re-exported)
    BadInputError,
    ConflictError,
    NotFoundError,
    StoreLostError,
    StoreUnavailableError,
)

DEFAULT_SCOPE = "default"
# The policy pointer of this scope names a candidate run in shadow mode, not enforced (R15).
SHADOW_SCOPE = "shadow"


class VersionInfo(msgspec.Struct, frozen=True):
    """An immutable document version (docs/ROLLBACK.md R1); `document` is the bytes as pushed."""

    domain: str
    id: int
    digest: str
    name: str
    created_at: float
    actor: str
    reason: str


class Candidate(msgspec.Struct, frozen=True, omit_defaults=True):
    """A version served beside the current one to a share of traffic (a canary): callers
    whose sticky bucket is below `share` (of `_core.STICKY_BUCKETS`, 10,000) get it.

    `revert_if` holds automatic revert rules (R13, `control/auto_revert.py`): judged over
    the last `window_s` seconds of every replica's traffic once the candidate served
    `min_requests` there; the first that holds sets the share to 0, by actor `auto`."""

    version: int
    share: int
    revert_if: tuple[str, ...] = ()
    min_requests: int = 0
    window_s: float = 0.0
    # A routing candidate run as a shadow: the callers in its share are served by the
    # current version as ever, and their requests are also sent to the candidate's upstream,
    # whose answer is only measured and compared (never sent to a client).
    shadow: bool = False

    @property
    def percent(self) -> float:
        return self.share / 100

    @property
    def serves(self) -> bool:
        """Whether clients get the candidate's answers (a split, not a shadow, above 0 %)."""
        return self.share > 0 and not self.shadow


class ChangeItem(msgspec.Struct, frozen=True, omit_defaults=True):
    """One pointer moved by a change: `prev` and `new` are the current version ids (None:
    unset), `prev_candidate` and `candidate` the candidate position before and after (left
    out of JSON when there is none, as in records from before canaries)."""

    domain: str
    scope: str
    prev: int | None
    new: int | None
    prev_candidate: Candidate | None = None
    candidate: Candidate | None = None

    @property
    def moves_current(self) -> bool:
        return self.prev != self.new


class Change(msgspec.Struct, frozen=True):
    """A change record (R2): every pointer flip, with who, when and why."""

    id: int
    at: float
    actor: str
    reason: str
    kind: str  # bootstrap | activate | rollback | canary | promote | shadow | restore | lost | key
    items: list[ChangeItem]


class Ack(msgspec.Struct, frozen=True):
    """A replica's answer to a change: applied (ok) or refused with the error (R4)."""

    change_id: int
    replica: str
    ok: bool
    error: str
    at: float


class StoreIdentity(msgspec.Struct, frozen=True):
    """Which store this is (R17): written once, with the first versions, and never changed.
    A store that comes back without it, or with another, has lost its history."""

    epoch: str  # random hex
    created_at: float


class Watermark(msgspec.Struct, frozen=True):
    """How far a store's history reached when a process last looked: its epoch, the last
    change id and the last version id of each domain. Remembered outside the store, so a
    store that lost its data is recognised instead of handing out used numbers again."""

    epoch: str
    created_at: float
    last_change: int
    last_versions: dict[str, int]


class StoreHead(msgspec.Struct, frozen=True):
    """The store's identity and how far its history goes, read in one round trip."""

    identity: StoreIdentity | None
    last_change: int
    last_versions: dict[str, int]


class Replica(msgspec.Struct, frozen=True):
    name: str
    pid: int
    host: str
    started_at: float
    heartbeat_at: float
    applied_change: int
    versions: dict[str, int]
    # What the replica has seen of the store; it survives the store losing its data, so
    # every tool reading the heartbeats learns what was lost.
    mark: Watermark | None = None
    # Its traffic by position for each canary it serves ("routing/default" -> "candidate" |
    # "current" -> counts since it started), for automatic revert rules (R13).
    traffic: dict[str, dict[str, PositionTraffic]] = {}


class PositionTraffic(msgspec.Struct, frozen=True, array_like=True):
    """Requests one replica served from one position since it started: how many, how many
    failed (5xx), and their latencies as the request histogram counts them."""

    requests: int
    errors: int
    buckets: tuple[int, ...]  # non-cumulative, one per _core.LATENCY_BUCKETS bound, then +Inf


class Pointer(msgspec.Struct, frozen=True, omit_defaults=True):
    """What one domain serves at one scope: its current version and, during a canary, a
    candidate beside it."""

    domain: str
    scope: str
    version: int
    change_id: int
    candidate: Candidate | None = None


class StoredVersion(msgspec.Struct, frozen=True):
    info: VersionInfo
    document: bytes  # base64 in JSON


class StoreDump(msgspec.Struct, frozen=True):
    """Everything a store keeps forever: identity, versions, change records, pointers, keys.
    `gatewayd store export` writes one; bootstrap and restore seed an empty store from one."""

    identity: StoreIdentity
    versions: list[StoredVersion]
    last_versions: dict[str, int]  # domain -> last id given, at least the highest stored
    changes: list[Change]  # ids 1..N, no gaps
    pointers: list[Pointer]
    keys: list[RuntimeKey] = []  # run-time caller keys, revoked ones included (none in older dumps)


class RegistryError(BadInputError):
    """An operation refused with a one-line reason; nothing was changed."""
