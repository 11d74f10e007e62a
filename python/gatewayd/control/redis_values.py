"""How the shared control store's records are written in Redis (gatewayd.control.redis_store):
a "stamped" value is `<redis time> <JSON body>`, the body being the record without that
time; a pointer's candidate is its canonical JSON, so the flip script can compare it as a
string.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

from gatewayd.control.model import Candidate, ChangeItem, PositionTraffic, VersionInfo, Watermark

Body = TypeVar("Body", bound=msgspec.Struct)


class VersionBody(msgspec.Struct, frozen=True):
    digest: str
    name: str
    actor: str
    reason: str


class ChangeBody(msgspec.Struct, frozen=True):
    actor: str
    reason: str
    kind: str
    items: list[ChangeItem]


class AckBody(msgspec.Struct, frozen=True):
    ok: bool
    error: str


class ReplicaBody(msgspec.Struct, frozen=True):
    pid: int
    host: str
    started_at: float
    applied_change: int
    versions: dict[str, int]
    mark: Watermark | None = None
    traffic: dict[str, dict[str, PositionTraffic]] = {}


def version_info(domain: str, version_id: int, meta: bytes) -> VersionInfo:
    created_at, body = unstamp(meta, VersionBody)
    return VersionInfo(domain, version_id, body.digest, body.name, created_at, body.actor, body.reason)


def stamped(at: float, body: bytes) -> bytes:
    return f"{at:.6f} ".encode() + body


def unstamp(value: bytes, body_type: type[Body]) -> tuple[float, Body]:
    at, _, body = value.partition(b" ")
    return float(at), msgspec.json.decode(body, type=body_type)


def id_arg(version: int | None) -> str:
    return "" if version is None else str(version)


def candidate_arg(candidate: Candidate | None) -> str:
    """The candidate's JSON as stored and compared; decoded once first, so a value given in
    another type than its field's (an int window) encodes as the stored one reads back."""
    if candidate is None:
        return ""
    canonical = msgspec.json.decode(msgspec.json.encode(candidate), type=Candidate)
    return msgspec.json.encode(canonical).decode()


def parse_candidate(text: bytes) -> Candidate | None:
    return msgspec.json.decode(text, type=Candidate) if text else None
