"""A replica's last-known-good state on local disk, so it can start and serve with the
control store unreachable or wiped (docs/ROLLBACK.md R16, R17: fail static).

Beside the state (`<name>.json`: the change applied, its pointers and their documents, and
the watermark of the store's history) every version the replica ever served is archived
once, with its metadata, under `archive/<epoch>/`: a wiped store is re-seeded from these
(`gatewayd store restore`), so every version an audit record names resolves again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import msgspec

from gatewayd.control.keys import RuntimeKey
from gatewayd.control.model import Pointer, StoredVersion, Watermark

DIRECTORY = "last-known-good"


class _Document(msgspec.Struct, frozen=True):
    domain: str
    version: int
    name: str
    data: bytes  # base64 in the JSON file


class SavedState(msgspec.Struct, frozen=True):
    change_id: int
    pointers: list[Pointer]
    documents: list[_Document]
    mark: Watermark | None = None  # absent in files written before store identities

    def document_map(self) -> dict[tuple[str, int], tuple[str, bytes]]:
        return {(d.domain, d.version): (d.name, d.data) for d in self.documents}


class LastKnownGood:
    def __init__(self, path: Path):
        self.path = path
        self._saved: SavedState | None = None

    def save(
        self,
        change_id: int,
        pointers: list[Pointer],
        fetch: Callable[[str, int], StoredVersion],
        mark: Watermark | None,
    ) -> None:
        """Writes atomically (temp file, fsync, rename): a crash leaves the old or the new state."""
        docs = []
        for p in pointers:
            stored = fetch(p.domain, p.version)
            if mark is not None:
                _archive(self.path.parent / "archive" / mark.epoch, stored)
            docs.append(_Document(p.domain, p.version, stored.info.name, stored.document))
        self._write(SavedState(change_id, pointers, docs, mark))

    def save_mark(self, mark: Watermark) -> None:
        """Remembers how far the store's history went, keeping the state as it was."""
        saved = self._saved or self.load() or SavedState(0, [], [])
        self._write(SavedState(saved.change_id, saved.pointers, saved.documents, mark))

    def load(self) -> SavedState | None:
        self._saved = _read(self.path)
        return self._saved

    @staticmethod
    def all_in(state_dir: Path) -> list[SavedState]:
        """Every replica's saved state in a control directory."""
        return [s for path in sorted((state_dir / DIRECTORY).glob("*.json")) if (s := _read(path))]

    @staticmethod
    def archived(state_dir: Path, epoch: str) -> list[StoredVersion]:
        """Every version a replica of this directory served while the store had `epoch`."""
        out = []
        for path in sorted((state_dir / DIRECTORY / "archive" / epoch).glob("*.json")):
            try:
                out.append(msgspec.json.decode(path.read_bytes(), type=StoredVersion))
            except msgspec.DecodeError:
                continue  # a torn write of a file written once: the state files still hold it
        return out

    def save_keys(self, keys: list[RuntimeKey]) -> None:
        """The run-time key table beside the state (`<name>.keys`), atomically."""
        _write_atomically(self.path.with_suffix(".keys"), msgspec.json.encode(keys))

    def load_keys(self) -> list[RuntimeKey]:
        return _read_keys(self.path.with_suffix(".keys"))

    @staticmethod
    def keys_in(state_dir: Path) -> list[RuntimeKey]:
        """Every run-time key the replicas of a control directory last knew, for a restore."""
        return [k for path in sorted((state_dir / DIRECTORY).glob("*.keys")) for k in _read_keys(path)]

    def _write(self, state: SavedState) -> None:
        _write_atomically(self.path, msgspec.json.encode(state))
        self._saved = state


def _read(path: Path) -> SavedState | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=SavedState)
    except FileNotFoundError:
        return None
    except msgspec.DecodeError:
        return None  # unreadable: treated as absent; the store is the truth


def _read_keys(path: Path) -> list[RuntimeKey]:
    try:
        return msgspec.json.decode(path.read_bytes(), type=list[RuntimeKey])
    except (FileNotFoundError, msgspec.DecodeError):
        return []


def _archive(directory: Path, stored: StoredVersion) -> None:
    path = directory / f"{stored.info.domain}-{stored.info.id}.json"
    if not path.exists():  # versions never change: written once
        _write_atomically(path, msgspec.json.encode(stored))


def _write_atomically(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
