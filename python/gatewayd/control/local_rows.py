"""The embedded control store's tables (gatewayd.control.local_store) and how its values
are written in their rows: candidates, watermarks and version maps as JSON text.
"""

from __future__ import annotations

import json
import sqlite3

import msgspec

from gatewayd.control.model import Candidate, ChangeItem, Watermark

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
    prev INTEGER, new INTEGER, prev_candidate TEXT, candidate TEXT);
CREATE TABLE IF NOT EXISTS pointers (
    domain TEXT NOT NULL, scope TEXT NOT NULL, version INTEGER NOT NULL,
    change_id INTEGER NOT NULL, candidate TEXT, PRIMARY KEY (domain, scope));
CREATE TABLE IF NOT EXISTS replicas (
    name TEXT PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL, started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL, applied_change INTEGER NOT NULL, versions TEXT NOT NULL, mark TEXT,
    traffic TEXT);
CREATE TABLE IF NOT EXISTS acks (
    change_id INTEGER NOT NULL, replica TEXT NOT NULL, ok INTEGER NOT NULL,
    error TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (change_id, replica));
CREATE TABLE IF NOT EXISTS identity (
    only INTEGER PRIMARY KEY CHECK (only = 1), epoch TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS version_counters (domain TEXT PRIMARY KEY, last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runtime_keys (name TEXT PRIMARY KEY, record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS spend (counter TEXT PRIMARY KEY, cost REAL NOT NULL, tokens INTEGER NOT NULL);
"""


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT, so concurrent writers serialise instead of failing late."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")


INSERT_ITEM = (
    "INSERT INTO change_items (change_id, domain, scope, prev, new, prev_candidate, candidate) VALUES (?,?,?,?,?,?,?)"
)


def item_row(item: ChangeItem) -> tuple:
    return (
        item.domain,
        item.scope,
        item.prev,
        item.new,
        candidate_text(item.prev_candidate),
        candidate_text(item.candidate),
    )


def candidate_text(candidate: Candidate | None) -> str | None:
    return msgspec.json.encode(candidate).decode() if candidate else None


def parse_candidate(text: str | None) -> Candidate | None:
    return msgspec.json.decode(text, type=Candidate) if text else None


def json_versions(versions: dict[str, int]) -> str:
    return json.dumps(versions, sort_keys=True)


def parse_versions(text: str) -> dict[str, int]:
    return json.loads(text)


def parse_mark(text: str | None) -> Watermark | None:
    return msgspec.json.decode(text, type=Watermark) if text else None
