"""The console chart's samples (gatewayd.admin.live.RateHistory): requests per second and
5xx share per version set, from the deltas between reads of the replicas' metrics files."""

from __future__ import annotations

import time

import msgspec

from gatewayd import _core
from gatewayd.admin.live import SAMPLE_S, WINDOW_S, RateHistory
from gatewayd.server.metrics import MetricsDir, ReplicaMetrics

N = len(_core.LATENCY_BUCKETS) + 1


def write(folder: MetricsDir, replica: str, counts: dict[tuple[int, int, int], tuple[int, int]]) -> None:
    """`counts`: (policy, routing, candidate bits) -> (2xx requests, 5xx requests) since start."""
    requests = []
    for (policy, routing, bits), (ok, failed) in counts.items():
        for status, n in ((200, ok), (503, failed)):
            key = {"policy_version": policy, "routing_version": routing, "config_version": 1, "candidates": bits,
                   "api": "chat", "status": status, "cache": "miss"}  # fmt: skip
            requests.append([key, {"count": n, "sum_seconds": 0.0, "buckets": [n] + [0] * (N - 1)}])
    engine = msgspec.json.encode({"requests": requests, "shadow": [], "cache": {}})
    folder.write(ReplicaMetrics(replica, time.time(), 1, {}, {}, msgspec.Raw(engine)))


def test_rates_are_deltas_per_version_set_summed_over_replicas(tmp_path):
    folder = MetricsDir(tmp_path)
    history = RateHistory(folder)
    write(folder, "a", {(1, 1, 0): (100, 0)})
    write(folder, "b", {(1, 1, 0): (50, 0)})
    history.sample(1000.0)  # the first read is a baseline: nothing to divide yet
    assert history.rates().series == []
    write(folder, "a", {(1, 1, 0): (150, 0), (2, 1, 0): (8, 2)})
    write(folder, "b", {(1, 1, 0): (100, 0), (1, 3, 2): (10, 10)})
    history.sample(1005.0)
    rates = history.rates()
    assert rates.t == [1005.0] and rates.sample_s == SAMPLE_S
    by_label = {s.label: (s.rps[0], s.error_rate[0]) for s in rates.series}
    assert by_label == {
        "policy v1 · routing v1 · config v1": (20.0, 0.0),  # (50 + 50) / 5 s
        "policy v2 · routing v1 · config v1": (2.0, 0.2),
        "policy v1 · routing v3 · config v1 (routing candidate)": (4.0, 0.5),
    }


def test_a_restarted_replica_counts_from_zero_and_idle_versions_leave_gaps(tmp_path):
    folder = MetricsDir(tmp_path)
    history = RateHistory(folder)
    write(folder, "a", {(1, 1, 0): (1000, 0)})
    history.sample(0.0)
    write(folder, "a", {(1, 1, 0): (30, 0)})  # restarted: its counters began again
    history.sample(10.0)
    write(folder, "a", {(1, 1, 0): (30, 0), (2, 1, 0): (10, 0)})
    history.sample(20.0)
    series = {s.label: s.rps for s in history.rates().series}
    assert series["policy v1 · routing v1 · config v1"] == [3.0, None]  # nothing served in the second
    assert series["policy v2 · routing v1 · config v1"] == [None, 1.0]


def test_the_window_keeps_fifteen_minutes(tmp_path):
    folder = MetricsDir(tmp_path)
    history = RateHistory(folder)
    for i in range(int(WINDOW_S / SAMPLE_S) + 20):
        write(folder, "a", {(1, 1, 0): (i * 10, 0)})
        history.sample(i * SAMPLE_S)
    rates = history.rates()
    assert len(rates.t) == WINDOW_S / SAMPLE_S
    assert rates.t[-1] - rates.t[0] == WINDOW_S - SAMPLE_S
