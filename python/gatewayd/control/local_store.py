"""The embedded control store: one SQLite database in a directory, shared by the
workers of one host. It is the default when no Redis is configured.

Every write is one transaction, so a pointer compare-and-set and its change record land
together or not at all. WAL mode lets replicas read while the CLI writes; a flip wakes
them through a FIFO each (gatewayd.control.local_wake).
"""

from __future__ import annotations

import functools
import os
import sqlite3
import time
from pathlib import Path

import msgspec

from gatewayd.control.keys import RuntimeKey
from gatewayd.control.local_rows import (
    INSERT_ITEM,
    SCHEMA,
    Transaction,
    candidate_text,
    item_row,
    json_versions,
    parse_candidate,
    parse_mark,
    parse_versions,
)
from gatewayd.control.local_wake import LocalSubscription, wake_subscribers
from gatewayd.control.model import (
    Ack,
    Change,
    ChangeItem,
    ConflictError,
    Pointer,
    PositionTraffic,
    Replica,
    StoreDump,
    StoreHead,
    StoreIdentity,
    StoreLostError,
    StoreUnavailableError,
    VersionInfo,
)


def _guarded(method):
    """Turns SQLite's operational failures (the write lock held past `lock_timeout_s` by
    another process, a disk error, a file that cannot be opened) into StoreUnavailableError,
    as the Redis store does with a lost connection."""

    @functools.wraps(method)
    def wrapper(self: LocalStore, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailableError(f"control store {self.where}: {exc}") from exc

    return wrapper


class LocalStore:
    """SQLite-backed store (a `ControlStore`); one connection per process (workers open
    their own). A write waits up to `lock_timeout_s` for another process's write; a
    subscription looks for a new change every `change_check_s`."""

    def __init__(
        self, directory: str | os.PathLike[str], *, lock_timeout_s: float = 10.0, change_check_s: float = 0.01
    ):
        self.change_check_s = change_check_s
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path / "control.sqlite3"
        self._db = sqlite3.connect(self.path, timeout=lock_timeout_s, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        # Columns added since the first schema: a database made before them gets them.
        for table, column in (
            ("replicas", "mark"),
            ("replicas", "traffic"),
            ("pointers", "candidate"),
            ("change_items", "prev_candidate"),
            ("change_items", "candidate"),
        ):
            columns = [row[1] for row in self._db.execute(f"PRAGMA table_info({table})")]
            if column not in columns:
                try:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")
                except sqlite3.OperationalError:  # another process added it first
                    pass

    @property
    def where(self) -> str:
        return str(self.path)

    def close(self) -> None:
        self._db.close()

    def topology(self) -> str:
        """Nothing to say: one file on this host."""
        return ""

    def durability_problems(self) -> tuple[list[str], list[str]]:
        """(refusals, warnings), as for Redis: none here, every commit is synced (synchronous=FULL)."""
        return [], []

    # -- identity (R17) ----------------------------------------------------------------
    @_guarded
    def head(self) -> StoreHead:
        row = self._db.execute("SELECT epoch, created_at FROM identity").fetchone()
        (last_change,) = self._db.execute("SELECT coalesce(max(id), 0) FROM changes").fetchone()
        return StoreHead(StoreIdentity(*row) if row else None, last_change, self._last_versions(self._db))

    @_guarded
    def seed(self, dump: StoreDump) -> bool:
        """Writes a whole history into a store that has none, in one transaction; False
        (nothing written) when it already has an identity, a version or a change."""
        seeded = self._seed(dump)
        if seeded:
            wake_subscribers(self.path.parent)
        return seeded

    def _seed(self, dump: StoreDump) -> bool:
        with self._write() as db:
            taken = db.execute(
                "SELECT (SELECT count(*) FROM identity) + (SELECT count(*) FROM versions)"
                " + (SELECT count(*) FROM changes) + (SELECT count(*) FROM pointers)"
            ).fetchone()[0]
            if taken:
                return False
            db.execute("INSERT INTO identity VALUES (1,?,?)", (dump.identity.epoch, dump.identity.created_at))
            for v in dump.versions:
                i = v.info
                db.execute(
                    "INSERT INTO versions VALUES (?,?,?,?,?,?,?,?)",
                    (i.domain, i.id, i.digest, i.name, v.document, i.created_at, i.actor, i.reason),
                )
            db.executemany("INSERT INTO version_counters VALUES (?,?)", dump.last_versions.items())
            for c in dump.changes:
                db.execute("INSERT INTO changes VALUES (?,?,?,?,?)", (c.id, c.at, c.actor, c.reason, c.kind))
                db.executemany(INSERT_ITEM, [(c.id, *item_row(i)) for i in c.items])
            db.executemany(
                "INSERT INTO pointers VALUES (?,?,?,?,?)",
                [(p.domain, p.scope, p.version, p.change_id, candidate_text(p.candidate)) for p in dump.pointers],
            )
            db.executemany(
                "INSERT OR REPLACE INTO runtime_keys VALUES (?,?)",
                [(k.name, msgspec.json.encode(k)) for k in dump.keys],
            )
            return True

    @_guarded
    def claim_identity(self, identity: StoreIdentity) -> bool:
        """Gives a store from before identities its epoch; False if it has one already."""
        with self._write() as db:
            cursor = db.execute("INSERT OR IGNORE INTO identity VALUES (1,?,?)", (identity.epoch, identity.created_at))
            return cursor.rowcount == 1

    def _check_epoch(self, db: sqlite3.Connection, epoch: str) -> None:
        row = db.execute("SELECT epoch FROM identity").fetchone()
        if row is None or row[0] != epoch:
            found = f"epoch {row[0]}" if row else "no identity"
            raise StoreLostError(
                f"control store at {self.where}: expected epoch {epoch}, found {found}; nothing written"
            )

    @staticmethod
    def _last_versions(db: sqlite3.Connection) -> dict[str, int]:
        last = dict(db.execute("SELECT domain, max(id) FROM versions GROUP BY domain").fetchall())
        for domain, counter in db.execute("SELECT domain, last FROM version_counters"):
            last[domain] = max(last.get(domain, 0), counter)
        return last

    # -- versions ---------------------------------------------------------------------
    @_guarded
    def add_version(
        self, domain: str, digest: str, name: str, document: bytes, actor: str, reason: str, *, epoch: str
    ) -> int:
        """Stores the next version of `domain`, if the store is still epoch `epoch` (R17)."""
        with self._write() as db:
            self._check_epoch(db, epoch)
            new = self._last_versions(db).get(domain, 0) + 1
            db.execute(
                "INSERT INTO versions VALUES (?,?,?,?,?,?,?,?)",
                (domain, new, digest, name, document, time.time(), actor, reason),
            )
            db.execute("INSERT OR REPLACE INTO version_counters VALUES (?,?)", (domain, new))
            return new

    @_guarded
    def version(self, domain: str, version_id: int) -> tuple[VersionInfo, bytes] | None:
        row = self._db.execute(
            "SELECT domain,id,digest,name,created_at,actor,reason,document FROM versions WHERE domain=? AND id=?",
            (domain, version_id),
        ).fetchone()
        return (VersionInfo(*row[:7]), bytes(row[7])) if row else None

    @_guarded
    def versions(self, domain: str) -> list[VersionInfo]:
        rows = self._db.execute(
            "SELECT domain,id,digest,name,created_at,actor,reason FROM versions WHERE domain=? ORDER BY id",
            (domain,),
        )
        return [VersionInfo(*r) for r in rows]

    # -- pointers and changes ---------------------------------------------------------
    @_guarded
    def pointers(self) -> list[Pointer]:
        rows = self._db.execute("SELECT domain,scope,version,change_id,candidate FROM pointers ORDER BY domain, scope")
        return [Pointer(d, s, v, c, parse_candidate(candidate)) for d, s, v, c, candidate in rows]

    @_guarded
    def last_change_id(self) -> int:
        return self._db.execute("SELECT coalesce(max(id), 0) FROM changes").fetchone()[0]

    @_guarded
    def flip(self, items: list[ChangeItem], actor: str, reason: str, kind: str, *, epoch: str) -> Change:
        """Moves every pointer in `items` in one transaction, if each still holds `prev` and
        `prev_candidate` and the store is still epoch `epoch`; wakes every subscription."""
        change = self._flip(items, actor, reason, kind, epoch)
        wake_subscribers(self.path.parent)
        return change

    def _flip(self, items: list[ChangeItem], actor: str, reason: str, kind: str, epoch: str) -> Change:
        with self._write() as db:
            self._check_epoch(db, epoch)
            for item in items:
                row = db.execute(
                    "SELECT version, candidate FROM pointers WHERE domain=? AND scope=?", (item.domain, item.scope)
                ).fetchone()
                current, candidate = (row[0], parse_candidate(row[1])) if row else (None, None)
                if current != item.prev:
                    raise ConflictError.moved(item.domain, item.scope, current, item.prev)
                if candidate != item.prev_candidate:
                    raise ConflictError.candidate_moved(item.domain, item.scope, candidate, item.prev_candidate)
            at = time.time()
            change_id = db.execute(
                "INSERT INTO changes (at, actor, reason, kind) VALUES (?,?,?,?)", (at, actor, reason, kind)
            ).lastrowid
            assert change_id is not None  # an INSERT sets lastrowid
            for item in items:
                db.execute(INSERT_ITEM, (change_id, *item_row(item)))
                if item.new is None:
                    db.execute("DELETE FROM pointers WHERE domain=? AND scope=?", (item.domain, item.scope))
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO pointers VALUES (?,?,?,?,?)",
                        (item.domain, item.scope, item.new, change_id, candidate_text(item.candidate)),
                    )
            return Change(change_id, at, actor, reason, kind, list(items))

    # -- run-time caller keys (gatewayd.control.keys) -----------------------------------
    @_guarded
    def add_key(self, key: RuntimeKey) -> bool:
        with self._write() as db:
            cursor = db.execute("INSERT OR IGNORE INTO runtime_keys VALUES (?,?)", (key.name, msgspec.json.encode(key)))
            return cursor.rowcount == 1

    @_guarded
    def set_key(self, key: RuntimeKey) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO runtime_keys VALUES (?,?)", (key.name, msgspec.json.encode(key)))

    @_guarded
    def runtime_keys(self) -> list[RuntimeKey]:
        rows = self._db.execute("SELECT record FROM runtime_keys ORDER BY name").fetchall()
        return [msgspec.json.decode(row[0], type=RuntimeKey) for row in rows]

    # -- spend counters (budgets, gatewayd.server.budgets) -------------------------------
    @_guarded
    def add_spend(self, increments: dict[str, tuple[float, int]]) -> None:
        with self._write() as db:
            db.executemany(
                "INSERT INTO spend VALUES (?,?,?) ON CONFLICT (counter) DO UPDATE"
                " SET cost = cost + excluded.cost, tokens = tokens + excluded.tokens",
                [(counter, cost, tokens) for counter, (cost, tokens) in increments.items()],
            )

    @_guarded
    def spend(self, counters: list[str]) -> dict[str, tuple[float, int]]:
        found: dict[str, tuple[float, int]] = {}
        for start in range(0, len(counters), 500):  # SQLite's bound on host parameters
            batch = counters[start : start + 500]
            marks = ",".join("?" * len(batch))
            for counter, cost, tokens in self._db.execute(
                f"SELECT counter, cost, tokens FROM spend WHERE counter IN ({marks})", batch
            ):
                found[counter] = (cost, tokens)
        return found

    @_guarded
    def changes(self, since_id: int = 0, domain: str | None = None) -> list[Change]:
        rows = self._db.execute(
            "SELECT id, at, actor, reason, kind FROM changes WHERE id > ? ORDER BY id", (since_id,)
        ).fetchall()
        items: dict[int, list[ChangeItem]] = {}
        for change_id, *rest in self._db.execute(
            "SELECT change_id, domain, scope, prev, new, prev_candidate, candidate FROM change_items"
            " WHERE change_id > ? ORDER BY rowid",
            (since_id,),
        ):
            d, s, prev, new, prev_candidate, candidate = rest
            items.setdefault(change_id, []).append(
                ChangeItem(d, s, prev, new, parse_candidate(prev_candidate), parse_candidate(candidate))
            )
        out = [
            Change(change_id, at, actor, reason, kind, items.get(change_id, []))
            for change_id, at, actor, reason, kind in rows
        ]
        if domain:
            out = [c for c in out if any(i.domain == domain for i in c.items)]
        return out

    # -- replicas and acknowledgements ------------------------------------------------
    @_guarded
    def heartbeat(self, replica: Replica) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO replicas"
                " (name, pid, host, started_at, heartbeat_at, applied_change, versions, mark, traffic)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    replica.name,
                    replica.pid,
                    replica.host,
                    replica.started_at,
                    replica.heartbeat_at,
                    replica.applied_change,
                    json_versions(replica.versions),
                    msgspec.json.encode(replica.mark).decode() if replica.mark else None,
                    msgspec.json.encode(replica.traffic).decode() if replica.traffic else None,
                ),
            )

    @_guarded
    def replicas(self) -> list[Replica]:
        rows = self._db.execute(
            "SELECT name, pid, host, started_at, heartbeat_at, applied_change, versions, mark, traffic"
            " FROM replicas ORDER BY name"
        ).fetchall()
        return [
            Replica(
                name,
                pid,
                host,
                started_at,
                heartbeat_at,
                applied,
                parse_versions(versions),
                parse_mark(mark),
                msgspec.json.decode(traffic, type=dict[str, dict[str, PositionTraffic]]) if traffic else {},
            )
            for name, pid, host, started_at, heartbeat_at, applied, versions, mark, traffic in rows
        ]

    @_guarded
    def remove_replica(self, name: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM replicas WHERE name=?", (name,))

    @_guarded
    def ack(self, ack: Ack) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO acks VALUES (?,?,?,?,?)",
                (ack.change_id, ack.replica, int(ack.ok), ack.error, ack.at),
            )

    @_guarded
    def acks(self, change_id: int) -> list[Ack]:
        rows = self._db.execute(
            "SELECT change_id, replica, ok, error, at FROM acks WHERE change_id=? ORDER BY replica", (change_id,)
        )
        return [Ack(c, r, bool(ok), e, at) for c, r, ok, e, at in rows]

    def subscribe(self, *, check_interval_s: float | None = None) -> LocalSubscription:
        return LocalSubscription(self.path, self.change_check_s if check_interval_s is None else check_interval_s)

    def _write(self) -> Transaction:
        return Transaction(self._db)
