"""The embedded control store: one SQLite database in a directory, shared by the
workers of one host. It is the default when no Redis is configured.

Every write is one transaction, so a pointer compare-and-set and its change record land
together or not at all. WAL mode lets replicas poll while the CLI writes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

from gatewayd.control.model import Ack, Change, ChangeItem, ConflictError, Pointer, Replica, VersionInfo

SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    domain TEXT NOT NULL, id INTEGER NOT NULL, digest TEXT NOT NULL, name TEXT NOT NULL,
    document BLOB NOT NULL, created_at REAL NOT NULL, actor TEXT NOT NULL, reason TEXT NOT NULL,
    PRIMARY KEY (domain, id));
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, actor TEXT NOT NULL,
    reason TEXT NOT NULL, kind TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS change_items (
    change_id INTEGER NOT NULL, domain TEXT NOT NULL, scope TEXT NOT NULL,
    prev INTEGER, new INTEGER);
CREATE TABLE IF NOT EXISTS pointers (
    domain TEXT NOT NULL, scope TEXT NOT NULL, version INTEGER NOT NULL,
    change_id INTEGER NOT NULL, PRIMARY KEY (domain, scope));
CREATE TABLE IF NOT EXISTS replicas (
    name TEXT PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL, started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL, applied_change INTEGER NOT NULL, versions TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS acks (
    change_id INTEGER NOT NULL, replica TEXT NOT NULL, ok INTEGER NOT NULL,
    error TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (change_id, replica));
"""


class LocalStore:
    """SQLite-backed store; one connection per process (workers open their own)."""

    def __init__(self, directory: str | os.PathLike[str]):
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path / "control.sqlite3"
        self._db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def durability_problems(self) -> tuple[list[str], list[str]]:
        """(refusals, warnings), as for Redis: none here, every commit is synced (synchronous=FULL)."""
        return [], []

    # -- versions ---------------------------------------------------------------------
    def add_version(self, domain: str, digest: str, name: str, document: bytes, actor: str, reason: str) -> int:
        with self._write() as db:
            (last,) = db.execute("SELECT coalesce(max(id), 0) FROM versions WHERE domain=?", (domain,)).fetchone()
            db.execute(
                "INSERT INTO versions VALUES (?,?,?,?,?,?,?,?)",
                (domain, last + 1, digest, name, document, time.time(), actor, reason),
            )
            return last + 1

    def version(self, domain: str, version_id: int) -> tuple[VersionInfo, bytes] | None:
        row = self._db.execute(
            "SELECT domain,id,digest,name,created_at,actor,reason,document FROM versions WHERE domain=? AND id=?",
            (domain, version_id),
        ).fetchone()
        return (VersionInfo(*row[:7]), bytes(row[7])) if row else None

    def versions(self, domain: str) -> list[VersionInfo]:
        rows = self._db.execute(
            "SELECT domain,id,digest,name,created_at,actor,reason FROM versions WHERE domain=? ORDER BY id",
            (domain,),
        )
        return [VersionInfo(*r) for r in rows]

    # -- pointers and changes ---------------------------------------------------------
    def pointers(self) -> list[Pointer]:
        return [Pointer(*r) for r in self._db.execute("SELECT domain,scope,version,change_id FROM pointers")]

    def last_change_id(self) -> int:
        return self._db.execute("SELECT coalesce(max(id), 0) FROM changes").fetchone()[0]

    def flip(self, items: list[ChangeItem], actor: str, reason: str, kind: str) -> Change:
        """Moves every pointer in `items` in one transaction, if each still holds `prev`."""
        with self._write() as db:
            for item in items:
                row = db.execute(
                    "SELECT version FROM pointers WHERE domain=? AND scope=?", (item.domain, item.scope)
                ).fetchone()
                current = row[0] if row else None
                if current != item.prev:
                    raise ConflictError.moved(item.domain, item.scope, current, item.prev)
            at = time.time()
            change_id = db.execute(
                "INSERT INTO changes (at, actor, reason, kind) VALUES (?,?,?,?)", (at, actor, reason, kind)
            ).lastrowid
            for item in items:
                db.execute("INSERT INTO change_items VALUES (?,?,?,?,?)", (change_id, *_item_row(item)))
                if item.new is None:
                    db.execute("DELETE FROM pointers WHERE domain=? AND scope=?", (item.domain, item.scope))
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO pointers VALUES (?,?,?,?)",
                        (item.domain, item.scope, item.new, change_id),
                    )
            return Change(change_id, at, actor, reason, kind, list(items))

    def changes(self, since_id: int = 0, domain: str | None = None) -> list[Change]:
        rows = self._db.execute(
            "SELECT id, at, actor, reason, kind FROM changes WHERE id > ? ORDER BY id", (since_id,)
        ).fetchall()
        items: dict[int, list[ChangeItem]] = {}
        for change_id, *rest in self._db.execute(
            "SELECT change_id, domain, scope, prev, new FROM change_items WHERE change_id > ? ORDER BY rowid",
            (since_id,),
        ):
            items.setdefault(change_id, []).append(ChangeItem(*rest))
        out = [Change(*row, items.get(row[0], [])) for row in rows]
        if domain:
            out = [c for c in out if any(i.domain == domain for i in c.items)]
        return out

    # -- replicas and acknowledgements ------------------------------------------------
    def heartbeat(self, replica: Replica) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO replicas VALUES (?,?,?,?,?,?,?)",
                (
                    replica.name,
                    replica.pid,
                    replica.host,
                    replica.started_at,
                    replica.heartbeat_at,
                    replica.applied_change,
                    _json_versions(replica.versions),
                ),
            )

    def replicas(self) -> list[Replica]:
        rows = self._db.execute("SELECT * FROM replicas ORDER BY name").fetchall()
        return [Replica(*r[:6], _parse_versions(r[6])) for r in rows]

    def remove_replica(self, name: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM replicas WHERE name=?", (name,))

    def ack(self, ack: Ack) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO acks VALUES (?,?,?,?,?)",
                (ack.change_id, ack.replica, int(ack.ok), ack.error, ack.at),
            )

    def acks(self, change_id: int) -> list[Ack]:
        rows = self._db.execute(
            "SELECT change_id, replica, ok, error, at FROM acks WHERE change_id=? ORDER BY replica", (change_id,)
        )
        return [Ack(c, r, bool(ok), e, at) for c, r, ok, e, at in rows]

    def subscribe(self, check_interval_s: float = 0.01) -> LocalSubscription:
        return LocalSubscription(self.path, check_interval_s)

    def _write(self) -> "_Transaction":
        return _Transaction(self._db)


class LocalSubscription:
    """Change hints for one thread: `wait` is True when the last change id differs from the
    one seen at the previous True (always True first, like a fresh Redis subscription).

    Reading the largest change id is a b-tree seek on a WAL snapshot, cheap enough to do
    every `check_interval_s`, so a flip is noticed within that instead of a poll interval.
    """

    def __init__(self, path: Path, check_interval_s: float):
        self._db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        self._check_interval_s = check_interval_s
        self._seen: int | None = None

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            (last,) = self._db.execute("SELECT coalesce(max(id), 0) FROM changes").fetchone()
            if last != self._seen:
                self._seen = last
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(self._check_interval_s, remaining))

    def close(self) -> None:
        self._db.close()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, so concurrent writers serialise instead of failing late."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _item_row(item: ChangeItem) -> tuple:
    return (item.domain, item.scope, item.prev, item.new)


def _json_versions(versions: dict[str, int]) -> str:
    return json.dumps(versions, sort_keys=True)


def _parse_versions(text: str) -> dict[str, int]:
    return json.loads(text)
