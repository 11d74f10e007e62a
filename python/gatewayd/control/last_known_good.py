"""A replica's last-known-good state on local disk, so it can start and serve with the
control store unreachable (ROLLBACK.md R16: fail static)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import msgspec

from gatewayd.control.model import Pointer


class _Document(msgspec.Struct, frozen=True):
    domain: str
    version: int
    name: str
    data: bytes  # base64 in the JSON file


class _State(msgspec.Struct, frozen=True):
    change_id: int
    pointers: list[Pointer]
    documents: list[_Document]


class LastKnownGood:
    def __init__(self, path: Path):
        self.path = path

    def save(self, change_id: int, pointers: list[Pointer], load: Callable[[str, int], tuple[str, bytes]]) -> None:
        """Writes atomically (temp file, fsync, rename): a crash leaves the old or the new state."""
        docs = []
        for p in pointers:
            name, data = load(p.domain, p.version)
            docs.append(_Document(p.domain, p.version, name, data))
        payload = msgspec.json.encode(_State(change_id, pointers, docs))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def load(self) -> tuple[int, list[Pointer], dict[tuple[str, int], tuple[str, bytes]]] | None:
        try:
            state = msgspec.json.decode(self.path.read_bytes(), type=_State)
        except FileNotFoundError:
            return None
        except msgspec.DecodeError:
            return None  # unreadable: treated as absent; the store is the truth
        documents = {(d.domain, d.version): (d.name, d.data) for d in state.documents}
        return state.change_id, state.pointers, documents
