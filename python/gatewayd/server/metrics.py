"""`GET /metrics`: Prometheus text for every replica on this host (docs/ROLLBACK.md R10).

Each worker writes its metrics to a small file once a second (and right before it answers
a scrape), so whichever worker the scrape lands on can answer for all of them. Request
series are labelled with the policy, routing and config versions that served them, so a
dashboard follows a rollback the moment traffic does.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import msgspec

from gatewayd._core import LATENCY_BUCKETS  # the Rust histogram's bounds: defined there once
from gatewayd.control.snapshot import CANDIDATE_BITS

STALE_AFTER_S = 30.0  # a file not refreshed for this long belongs to a worker that is gone
VERSION_LABELS = ("policy_version", "routing_version", "config_version")
CACHE_GAUGES = frozenset({"entries", "bytes"})  # current levels; every other cache stat counts up


class ReplicaMetrics(msgspec.Struct):
    replica: str
    written_at: float
    change_id: int
    versions: dict[str, int]
    counters: dict[str, int]
    engine: msgspec.Raw  # the Rust engine's snapshot: requests, shadow series, cache counters
    # Copies sent to a shadow routing candidate: (routing version, status, shape, count, seconds)
    shadow_routing: list[tuple[int, int, str, int, float]] = []
    # Usage by (tenant, key, model, provider, price version, currency): Engine.usage_rows
    usage: list[tuple[tuple[str, str, str, str, int, str], list[float]]] = []
    budgets: list[tuple[str, str, str, float]] = []  # (owner, period, unit, share used)
    gc_passes: list[int] = []  # the cyclic collector's passes, by generation (0, 1, 2)
    gc_frozen: int = 0  # objects frozen out of those passes at start-up


class _Series(msgspec.Struct):
    policy_version: int
    routing_version: int
    config_version: int
    api: str
    status: int
    cache: str
    candidates: int = 0  # which domains a candidate served (policy 1, routing 2, config 4)


class _Histogram(msgspec.Struct):
    count: int
    sum_seconds: float
    buckets: list[int]


class _ShadowKey(msgspec.Struct):
    shadow_version: int
    active_version: int
    active: str
    shadow: str


class _EngineSnapshot(msgspec.Struct):
    requests: list[tuple[_Series, _Histogram]]
    shadow: list[tuple[_ShadowKey, int]]
    cache: dict[str, int]  # every counter the Rust cache keeps, by its Rust name


class MetricsDir:
    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)

    def write(self, metrics: ReplicaMetrics) -> None:
        tmp = self.dir / f".{metrics.replica}.tmp"
        tmp.write_bytes(msgspec.json.encode(metrics))
        os.replace(tmp, self.dir / f"{metrics.replica}.json")

    def read_all(self) -> list[ReplicaMetrics]:
        now = time.time()
        out = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                m = msgspec.json.decode(path.read_bytes(), type=ReplicaMetrics)
            except (OSError, msgspec.DecodeError):
                continue  # being replaced right now, or gone
            if now - m.written_at <= STALE_AFTER_S:
                out.append(m)
        return out


def render(replicas: list[ReplicaMetrics]) -> bytes:
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    engines = [(m.replica, msgspec.json.decode(m.engine, type=_EngineSnapshot)) for m in replicas]

    family("gatewayd_requests_total", "counter", "Requests answered, by the versions that served them.")
    for replica, snap in engines:
        for key, hist in snap.requests:
            labels = _labels(replica=replica, **_versions(key), api=key.api, status=key.status, cache=key.cache)
            lines.append(f"gatewayd_requests_total{{{labels}}} {hist.count}")

    family("gatewayd_request_duration_seconds", "histogram", "Time in the gateway per request, by versions.")
    for replica, snap in engines:
        merged: dict[tuple, list] = {}
        for key, hist in snap.requests:
            acc = merged.setdefault(
                (key.policy_version, key.routing_version, key.config_version, key.candidates, key.api), [0, 0.0, None]
            )
            acc[0] += hist.count
            acc[1] += hist.sum_seconds
            acc[2] = hist.buckets if acc[2] is None else [a + b for a, b in zip(acc[2], hist.buckets, strict=True)]
        for (p, r, c, bits, api), (count, total, buckets) in sorted(merged.items()):
            candidate = candidate_label(bits)
            base = _labels(
                replica=replica, policy_version=p, routing_version=r, config_version=c, candidate=candidate, api=api
            )
            running = 0
            for bound, n in zip((*LATENCY_BUCKETS, "+Inf"), buckets, strict=True):
                running += n
                lines.append(f'gatewayd_request_duration_seconds_bucket{{{base},le="{bound}"}} {running}')
            lines.append(f"gatewayd_request_duration_seconds_sum{{{base}}} {total}")
            lines.append(f"gatewayd_request_duration_seconds_count{{{base}}} {count}")

    family("gatewayd_shadow_decisions_total", "counter", "Decisions of the shadow policy beside the enforced ones.")
    for replica, snap in engines:
        for skey, n in snap.shadow:
            labels = _labels(
                replica=replica,
                shadow_version=skey.shadow_version,
                active_version=skey.active_version,
                enforced=skey.active,
                shadow=skey.shadow,
            )
            lines.append(f"gatewayd_shadow_decisions_total{{{labels}}} {n}")

    family(
        "gatewayd_shadow_routing_requests_total",
        "counter",
        "Requests copied to a shadow routing candidate, by its answer's status and whether its shape "
        "matched the answer served (same, differs; - when there was nothing to compare).",
    )
    for m in replicas:
        for version, status, shape, count, _ in m.shadow_routing:
            labels = _labels(replica=m.replica, routing_version=version, status=status, shape=shape)
            lines.append(f"gatewayd_shadow_routing_requests_total{{{labels}}} {count}")
    family("gatewayd_shadow_routing_seconds_total", "counter", "Time the shadow routing candidate took to answer.")
    for m in replicas:
        for version, status, shape, _, seconds in m.shadow_routing:
            labels = _labels(replica=m.replica, routing_version=version, status=status, shape=shape)
            lines.append(f"gatewayd_shadow_routing_seconds_total{{{labels}}} {seconds}")

    _render_usage(replicas, family, lines)
    family("gatewayd_budget_used_ratio", "gauge", "Share of each budget used in its period, as this replica sees it.")
    for m in replicas:
        for owner, period, unit, share in m.budgets:
            kind, _, name = owner.partition(":")
            labels = _labels(replica=m.replica, owner=kind, name=name, period=period, unit=unit)
            lines.append(f"gatewayd_budget_used_ratio{{{labels}}} {share}")

    family(
        "gatewayd_replica_versions",
        "gauge",
        "The versions each replica serves, per domain/scope and position (1 = serving).",
    )
    for m in replicas:
        for domain_scope, version in sorted(m.versions.items()):
            domain, _, scope = domain_scope.partition("/")
            scope, _, position = scope.partition("@")
            labels = _labels(
                replica=m.replica,
                domain=domain,
                scope=scope,
                position=position or "current",
                version=version,
                change=m.change_id,
            )
            lines.append(f"gatewayd_replica_versions{{{labels}}} 1")

    for counter, help_text in (
        ("changes_applied", "Changes this replica applied and acknowledged."),
        ("changes_refused", "Changes this replica refused (negative acknowledgement)."),
        ("store_lost", "Times this replica lost the control store."),
        ("resyncs", "Times this replica resynchronised after losing the store."),
        ("unrecorded_requests", "Requests served without an audit record (audit.on_failure = open)."),
        ("audit_events_lost", "Replica events that could not be written to the audit chain."),
        ("audit_write_failures", "Request records that could not be written (refused, or served unrecorded)."),
        ("shadow_routing_skipped", "Requests not copied to a shadow routing candidate: too many copies in flight."),
    ):
        family(f"gatewayd_{counter}_total", "counter", help_text)
        for m in replicas:
            lines.append(f"gatewayd_{counter}_total{{{_labels(replica=m.replica)}}} {m.counters.get(counter, 0)}")

    family("gatewayd_python_gc_collections_total", "counter", "Passes of Python's cyclic collector, by generation.")
    for m in replicas:
        for generation, passes in enumerate(m.gc_passes):
            lines.append(
                f"gatewayd_python_gc_collections_total{{{_labels(replica=m.replica, generation=generation)}}} {passes}"
            )
    family(
        "gatewayd_python_gc_frozen_objects", "gauge", "Objects made at start-up, frozen out of the collector's passes."
    )
    for m in replicas:
        lines.append(f"gatewayd_python_gc_frozen_objects{{{_labels(replica=m.replica)}}} {m.gc_frozen}")

    stats = sorted({stat for _, snap in engines for stat in snap.cache})
    for stat in stats:
        kind = "gauge" if stat in CACHE_GAUGES else "counter"
        name = f"gatewayd_cache_{stat}" + ("" if kind == "gauge" else "_total")
        family(name, kind, f"Response cache {stat}.")
        for replica, snap in engines:
            lines.append(f"{name}{{{_labels(replica=replica)}}} {snap.cache.get(stat, 0)}")
    return ("\n".join(lines) + "\n").encode()


def request_counts(m: ReplicaMetrics) -> dict[tuple[int, int, int, int], tuple[int, int]]:
    """(policy, routing, config, candidate bits) -> (requests, 5xx answers) since the
    replica started: what the admin API samples for its per-version rate chart."""
    out: dict[tuple[int, int, int, int], tuple[int, int]] = {}
    for key, hist in msgspec.json.decode(m.engine, type=_EngineSnapshot).requests:
        versions = (key.policy_version, key.routing_version, key.config_version, key.candidates)
        requests, errors = out.get(versions, (0, 0))
        out[versions] = (requests + hist.count, errors + (hist.count if key.status >= 500 else 0))
    return out


USAGE_FAMILIES = (
    # (name, help, [(kind label or None, index in an Engine.usage_rows row)])
    ("gatewayd_usage_requests_total", "Requests whose record carries token usage.", [(None, 0)]),
    (
        "gatewayd_tokens_total",
        "Tokens the providers reported, by kind (prompt includes cached).",
        [("prompt", 1), ("completion", 2), ("cached", 3)],
    ),
    ("gatewayd_cost_total", "What the tokens cost, priced by the config version named.", [(None, 4)]),
    ("gatewayd_tokens_saved_total", "Tokens cache hits saved, by kind.", [("prompt", 5), ("completion", 6)]),
    ("gatewayd_cost_saved_total", "What cache hits saved.", [(None, 7)]),
)


def _render_usage(replicas: list[ReplicaMetrics], family, lines: list[str]) -> None:
    """Tokens and cost by tenant, key, model, provider and price version (the config
    version whose prices were used), each replica's own."""
    for name, help_text, columns in USAGE_FAMILIES:
        family(name, "counter", help_text)
        for m in replicas:
            for (tenant, key, model, provider, version, currency), row in m.usage:
                base = dict(
                    replica=m.replica, tenant=tenant, key=key, model=model, provider=provider, price_version=version
                )
                if name.startswith("gatewayd_cost"):
                    base["currency"] = currency
                for kind, index in columns:
                    labels = _labels(**base, **({"kind": kind} if kind else {}))
                    lines.append(f"{name}{{{labels}}} {row[index]}")


def _versions(key: _Series) -> dict[str, object]:
    """The version labels, and `candidate`: the domains served from a candidate position
    ("none", or e.g. "routing", "policy+routing"), so a canary's traffic is its own series."""
    labels: dict[str, object] = {name: getattr(key, name) for name in VERSION_LABELS}
    labels["candidate"] = candidate_label(key.candidates)
    return labels


def candidate_label(bits: int) -> str:
    return "+".join(domain for domain, bit in CANDIDATE_BITS.items() if bits & bit) or "none"


def _labels(**labels: object) -> str:
    return ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
