"""The control plane's own series, which the admin API adds to the replicas' /metrics: what
the alert rules in deploy/prometheus/alerts.yaml read (replica states, barriers, audit
verification). A store that does not answer is a series too, never a failed scrape."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from gatewayd.audit import trail
from gatewayd.control import overview
from gatewayd.control.barrier import BarrierReport
from gatewayd.control.registry import Registry

RETIRED_AFTER_S = 3600.0  # a replica silent this long was taken away: it leaves the series


class BarrierCounts:
    """Flips made through this admin process, by how their barrier ended."""

    RESULTS = ("in effect", "refused", "timeout")

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def note(self, report: BarrierReport) -> None:
        self.counts["in effect" if report.ok else "refused" if report.refused else "timeout"] += 1


def render(registry: Registry | None, control_dir: Path, barriers: BarrierCounts) -> bytes:
    """`registry` None: the store did not answer."""
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    family("gatewayd_control_store_up", "gauge", "1 if the admin API read the control store for this scrape.")
    lines.append(f"gatewayd_control_store_up {0 if registry is None else 1}")
    if registry is not None:
        status = overview.status(registry)
        family("gatewayd_control_last_change", "gauge", "The id of the last change record.")
        lines.append(f"gatewayd_control_last_change {status.last_change.id if status.last_change else 0}")
        family(
            "gatewayd_control_replica_state",
            "gauge",
            "1 for each replica's state (in sync, stale, gone, static); replicas silent for an hour are left out.",
        )
        family("gatewayd_control_replica_heartbeat_age_seconds", "gauge", "Seconds since the replica's heartbeat.")
        for r in status.replicas:
            if r.heartbeat_age_s > RETIRED_AFTER_S:
                continue
            lines.append(f'gatewayd_control_replica_state{{replica="{_escape(r.name)}",state="{r.state}"}} 1')
            lines.append(
                f'gatewayd_control_replica_heartbeat_age_seconds{{replica="{_escape(r.name)}"}} {r.heartbeat_age_s}'
            )
    family("gatewayd_admin_barriers_total", "counter", "Flips made through the admin API, by how their barrier ended.")
    for result in BarrierCounts.RESULTS:
        lines.append(f'gatewayd_admin_barriers_total{{result="{result}"}} {barriers.counts[result]}')
    last = trail.last_verification(control_dir)
    family(
        "gatewayd_audit_last_verified_timestamp_seconds",
        "gauge",
        "When the audit trail was last verified in full (0: never).",
    )
    lines.append(f"gatewayd_audit_last_verified_timestamp_seconds {last.at if last else 0}")
    family("gatewayd_audit_last_verification_intact", "gauge", "1 if the last full verification found no problem.")
    lines.append(f"gatewayd_audit_last_verification_intact {1 if last and last.intact else 0}")
    family("gatewayd_admin_scrape_timestamp_seconds", "gauge", "When this scrape was answered.")
    lines.append(f"gatewayd_admin_scrape_timestamp_seconds {time.time():.3f}")
    return ("\n".join(lines) + "\n").encode()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
