"""The control store contract, and which store a process uses: Redis when `[control]
redis_url` is set (replicas on many hosts share it; also GATEWAYD_CONTROL_REDIS_URL), else
the embedded SQLite store.

Both stores implement `ControlStore` exactly; `tests/test_redis_store.py` runs every method
against both. Every method may raise `StoreUnavailableError` (a one-line message naming
the store) when the store cannot be reached or a write cannot get through; writes that
name an epoch raise `StoreLostError` when the store is no longer that epoch (R17), and
nothing is written then.
"""

from __future__ import annotations

from typing import Protocol

from gatewayd.config import ConfigError, Settings
from gatewayd.control.keys import RuntimeKey
from gatewayd.control.local_store import LocalStore
from gatewayd.control.model import (
    Ack,
    Change,
    ChangeItem,
    Pointer,
    Replica,
    StoreDump,
    StoreHead,
    StoreIdentity,
    VersionInfo,
)


class Subscription(Protocol):
    """Change hints for one thread (R16): a hint, never the truth, so after a True the
    caller re-reads the pointers and the change log."""

    def wait(self, timeout: float) -> bool:
        """True when a change may have happened since the last True (always True first, and
        after a reconnect, since hints sent meanwhile are lost); False after `timeout`."""
        ...

    def close(self) -> None: ...


class ControlStore(Protocol):
    """Versions, pointers, the change log, replicas and their acknowledgements."""

    @property
    def where(self) -> str:
        """Where the store is, for messages: a path, or a URL without its credentials."""
        ...

    def close(self) -> None: ...

    def durability_problems(self) -> tuple[list[str], list[str]]:
        """(refusals, warnings): settings under which the store could lose acknowledged
        writes. A refusal stops `gatewayd serve` before it writes anything."""
        ...

    def topology(self) -> str:
        """Who serves the store, in one line for `gatewayd status`, without raising: behind
        Redis Sentinel, the master the sentinels name, whether it is down or was failed
        over, its replicas and the sentinels; empty when there is one server or a file."""
        ...

    # -- identity (R17) ----------------------------------------------------------------
    def head(self) -> StoreHead:
        """The identity, the last change id and the last version id of each domain, read
        together."""
        ...

    def seed(self, dump: StoreDump) -> bool:
        """Writes a whole history into a store that has none, at once; False (nothing
        written) when it has an identity, a version, a change or a pointer already."""
        ...

    def claim_identity(self, identity: StoreIdentity) -> bool:
        """Gives a store from before identities its epoch; False if it has one already."""
        ...

    # -- versions (R1) -------------------------------------------------------------------
    def add_version(
        self, domain: str, digest: str, name: str, document: bytes, actor: str, reason: str, *, epoch: str
    ) -> int:
        """Stores the next version of `domain` and returns its id, numbered from 1 per
        domain and never given twice, if the store is still epoch `epoch`."""
        ...

    def version(self, domain: str, version_id: int) -> tuple[VersionInfo, bytes] | None:
        """The version and its document bytes as pushed, or None."""
        ...

    def versions(self, domain: str) -> list[VersionInfo]:
        """Every version of `domain`, by id."""
        ...

    # -- pointers and changes (R2) -------------------------------------------------------
    def pointers(self) -> list[Pointer]:
        """Every pointer, ordered by (domain, scope)."""
        ...

    def last_change_id(self) -> int:
        """The id of the last change, 0 when there is none; ids run 1..N without gaps."""
        ...

    def flip(self, items: list[ChangeItem], actor: str, reason: str, kind: str, *, epoch: str) -> Change:
        """Moves every pointer in `items` and records the change, all or nothing: only if
        each pointer still holds its item's `prev` (else ConflictError) and the store is
        still epoch `epoch`. Wakes every subscription."""
        ...

    def changes(self, since_id: int = 0, domain: str | None = None) -> list[Change]:
        """The changes after `since_id` in id order; with `domain`, only those moving one of
        its pointers."""
        ...

    # -- replicas and acknowledgements (R4) ------------------------------------------------
    def heartbeat(self, replica: Replica) -> None:
        """Records the replica; `heartbeat_at` is the store's clock where it has one."""
        ...

    def replicas(self) -> list[Replica]:
        """Every replica that heartbeated and was not removed, by name."""
        ...

    def remove_replica(self, name: str) -> None: ...

    def ack(self, ack: Ack) -> None:
        """Records a replica's answer to a change; a second answer replaces the first."""
        ...

    def acks(self, change_id: int) -> list[Ack]:
        """The answers to a change, by replica name."""
        ...

    # -- run-time caller keys (gatewayd.control.keys) -------------------------------------
    def add_key(self, key: RuntimeKey) -> bool:
        """Stores a new key; False (nothing written) when its name is taken."""
        ...

    def set_key(self, key: RuntimeKey) -> None:
        """Replaces a key's record (its revocation)."""
        ...

    def runtime_keys(self) -> list[RuntimeKey]:
        """Every run-time key, revoked ones included, by name."""
        ...

    # -- spend counters (budgets) -----------------------------------------------------------
    def add_spend(self, increments: dict[str, tuple[float, int]]) -> None:
        """Adds (cost, tokens) to each named counter, all in one transaction."""
        ...

    def spend(self, counters: list[str]) -> dict[str, tuple[float, int]]:
        """The (cost, tokens) of each named counter that has any."""
        ...

    def subscribe(self, *, check_interval_s: float | None = None) -> Subscription:
        """Change hints for one thread. `check_interval_s` is how often the subscription
        checks its source (the embedded store reads the last change id; Redis pings, so a
        dead connection is noticed within two intervals); None is the store's default."""
        ...


def open_store(settings: Settings) -> ControlStore:
    control = settings.control
    if not control.redis_url:
        return LocalStore(settings.path(control.dir))
    # Imported here: redis-py costs ~140 ms of start-up, which an operator's rollback
    # command on the embedded store should not pay.
    from gatewayd.control.redis_store import RedisStore

    try:
        return RedisStore(control.redis_url)
    except ValueError as exc:  # redis-py's verdict on a malformed URL
        raise ConfigError(f"control.redis_url: {exc}") from None
