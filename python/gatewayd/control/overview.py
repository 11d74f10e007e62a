"""Read-only answers that the CLI and the admin API give alike: the current state of the
pointers and replicas, and what was in effect at an instant (docs/ROLLBACK.md R9)."""

from __future__ import annotations

import datetime as dt
import time

import msgspec

from gatewayd.control.barrier import LIVE_WITHIN_S
from gatewayd.control.model import Candidate, Change, Pointer, PositionTraffic
from gatewayd.control.registry import Registry


class ReplicaStatus(msgspec.Struct, frozen=True):
    name: str
    host: str
    pid: int
    # "in sync" (applied the last change), "stale", "gone" (no recent heartbeat), or "static"
    # (serving its last-known-good state because the store lost its data, R17)
    state: str
    applied_change: int
    heartbeat_age_s: float
    versions: dict[str, int]


class Status(msgspec.Struct, frozen=True):
    pointers: list[Pointer]
    last_change: Change | None
    replicas: list[ReplicaStatus]
    store_problem: str = ""  # what the store lost against what was seen of it (R17)
    # Per canary ("routing/default"): requests and 5xx answers by position, summed over
    # the live replicas since each started (R10).
    traffic: dict[str, dict[str, PositionTraffic]] = {}
    # Behind Redis Sentinel: the master the sentinels name, whether it failed over (one line)
    store_topology: str = ""


class InEffect(msgspec.Struct, frozen=True):
    """The version of one domain+scope at an instant, and who had applied it by then."""

    domain: str
    scope: str
    version: int
    change: Change
    acknowledged_by: list[str]
    candidate: Candidate | None = None  # served beside `version` to a share of traffic


def status(registry: Registry) -> Status:
    problem = registry.store_problem() or ""
    last = registry.last_change()
    last_id = last.id if last else 0
    now = time.time()
    replicas = []
    traffic: dict[str, dict[str, PositionTraffic]] = {}
    for r in registry.replicas():
        age = now - r.heartbeat_at
        if age <= LIVE_WITHIN_S:
            for key, positions in r.traffic.items():
                for position, t in positions.items():
                    traffic.setdefault(key, {})[position] = _add(traffic.get(key, {}).get(position), t)
        if age > LIVE_WITHIN_S:
            state = "gone"
        elif problem:
            state = "static"
        else:
            state = "in sync" if r.applied_change >= last_id else "stale"
        replicas.append(ReplicaStatus(r.name, r.host, r.pid, state, r.applied_change, round(age, 3), r.versions))
    return Status(registry.pointers(), last, replicas, problem, traffic, registry.store_topology())


def _add(a: PositionTraffic | None, b: PositionTraffic) -> PositionTraffic:
    if a is None:
        return b
    buckets = tuple(x + y for x, y in zip(a.buckets, b.buckets, strict=True))
    return PositionTraffic(a.requests + b.requests, a.errors + b.errors, buckets)


def in_effect_at(registry: Registry, at: float) -> list[InEffect]:
    """Per the change log; a replica counts as having applied a change once it acknowledged it."""
    out = []
    for (domain, scope), (version, candidate, change) in sorted(registry.in_effect_at(at).items()):
        acked = [a.replica for a in registry.acks(change.id) if a.ok and a.at <= at]
        out.append(InEffect(domain, scope, version, change, acked, candidate))
    return out


def describe(version: int | None, candidate: Candidate | None) -> str:
    """ "v3", or "v3 + candidate v4 at 25%" during a canary."""
    said = f"v{version}" if version is not None else "unset"
    if candidate is None:
        return said
    rules = f" (revert if {' or '.join(candidate.revert_if)})" if candidate.revert_if else ""
    kind = "shadow" if candidate.shadow else "candidate"
    return f"{said} + {kind} v{candidate.version} at {candidate.percent:g}%{rules}"


def moves(change: Change) -> str:
    """What a change moved, one `domain/scope before -> after` per item (a key change
    moves no pointer: the replicas reload their caller keys)."""
    if not change.items:
        return "caller keys"
    return ", ".join(
        f"{i.domain}/{i.scope} {describe(i.prev, i.prev_candidate)} -> {describe(i.new, i.candidate)}"
        for i in change.items
    )


def parse_instant(text: str) -> float:
    """RFC 3339 / ISO 8601 to epoch seconds; a time without a zone is UTC. Raises ValueError."""
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r} (e.g. 2026-11-23T14:32:17Z)") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
