"""Automatic revert rules (gatewayd.control.auto_revert): parsing, judging, the window over
heartbeats, and this replica's traffic by position from the engine's metrics."""

from __future__ import annotations

import math
import re

import msgspec
import pytest

from gatewayd import _core
from gatewayd.control.auto_revert import Judge, parse_rule, quantile, traffic_by_position, with_rules
from gatewayd.control.model import Candidate, Pointer, PositionTraffic, RegistryError, Replica

N = len(_core.LATENCY_BUCKETS) + 1


def traffic(requests: int, errors: int = 0, bucket: int = 0) -> PositionTraffic:
    buckets = [0] * N
    buckets[bucket] = requests
    return PositionTraffic(requests, errors, tuple(buckets))


@pytest.mark.parametrize(
    "text, metric, op, value, relative",
    [
        ("error_rate > 0.05", "error_rate", ">", 0.05, False),
        ("p95_ms>=3*current", "p95_ms", ">=", 3.0, True),
        ("  p99_ms < 1e3 ", "p99_ms", "<", 1000.0, False),
        ("p50_ms <= 2 * current", "p50_ms", "<=", 2.0, True),
    ],
)
def test_rules_parse(text, metric, op, value, relative):
    rule = parse_rule(text)
    assert (rule.metric, rule.op, rule.value, rule.relative) == (metric, op, value, relative)


@pytest.mark.parametrize("text", ["errors > 1", "error_rate >", "error_rate = 0.1", "p95_ms > x", "p95_ms > 3 * other"])
def test_a_bad_rule_is_named(text):
    with pytest.raises(RegistryError, match=re.escape(f"--revert-if {text!r}")):
        parse_rule(text)


def test_absolute_and_relative_judgements():
    bad, good = traffic(100, errors=30), traffic(100, errors=1)
    assert parse_rule("error_rate > 0.2").judge(bad, good) == (True, "error_rate 0.3 on the candidate")
    assert parse_rule("error_rate > 0.2").judge(good, bad)[0] is False
    slow, fast = traffic(100, bucket=10), traffic(100, bucket=2)  # 1 s against 2.5 ms
    held, figures = parse_rule("p95_ms > 3 * current").judge(slow, fast)
    assert held and figures == "p95_ms 1e+03 on the candidate against 2.5 on current"
    assert parse_rule("p95_ms > 3 * current").judge(slow, traffic(0)) == (
        False,
        "p95_ms: no current traffic to compare with",
    )


def test_quantile_is_the_bucket_bound_holding_it():
    buckets = [0] * N
    buckets[0], buckets[3] = 90, 10
    assert quantile(tuple(buckets), 0.5) == _core.LATENCY_BUCKETS[0]
    assert quantile(tuple(buckets), 0.95) == _core.LATENCY_BUCKETS[3]
    buckets[-1] = 1000
    assert quantile(tuple(buckets), 0.99) == math.inf


def test_rules_on_a_candidate_are_checked_and_defaulted():
    candidate = Candidate(7, 500)
    ruled = with_rules("routing", candidate, ["error_rate > 0.1"], None, None, False)
    assert ruled.revert_if == ("error_rate > 0.1",) and ruled.min_requests == 100 and ruled.window_s == 60
    assert with_rules("routing", candidate, [], None, None, False) is candidate
    with pytest.raises(RegistryError, match="--allow-policy-revert"):
        with_rules("policy", candidate, ["error_rate > 0.1"], None, None, False)
    assert with_rules("policy", candidate, ["error_rate > 0.1"], 5, 10, True).min_requests == 5
    with pytest.raises(RegistryError, match="--window"):
        with_rules("routing", candidate, ["error_rate > 0.1"], None, 0.5, False)


CANARY = Pointer("routing", "default", 1, 3, Candidate(7, 5000, ("error_rate > 0.2",), 50, 30.0))


def replica(name: str, at: float, candidate: PositionTraffic, current: PositionTraffic) -> Replica:
    positions = {"routing/default": {"candidate": candidate, "current": current}}
    return Replica(name, 1, "h", 0.0, at, 3, {}, None, positions)


def test_the_judge_sums_the_window_over_replicas():
    judge = Judge()
    start = [replica("a", 100, traffic(10, 10), traffic(10)), replica("b", 100, traffic(5, 5), traffic(5))]
    assert judge.verdicts([CANARY], start, 100) == []  # the first sample is the baseline
    later = [replica("a", 110, traffic(40, 40), traffic(40)), replica("b", 110, traffic(35, 35), traffic(35))]
    [verdict] = judge.verdicts([CANARY], later, 110)  # 30 + 30 failing candidate requests
    assert verdict.rule == "error_rate > 0.2" and verdict.pointer == CANARY
    assert verdict.reason.startswith("automatic revert: 'error_rate > 0.2' held (error_rate 1 on the candidate")
    assert "60 candidate requests in the last 30 s" in verdict.reason


def test_too_few_requests_and_old_traffic_do_not_count():
    judge = Judge()
    judge.verdicts([CANARY], [replica("a", 100, traffic(1000, 1000), traffic(10))], 100)
    assert judge.verdicts([CANARY], [replica("a", 110, traffic(1040, 1040), traffic(20))], 110) == []  # 40 < 50
    judge.verdicts([CANARY], [replica("a", 150, traffic(1045, 1045), traffic(30))], 150)
    # The window (30 s) now starts at 120: only what came after the 110 sample counts.
    assert judge.verdicts([CANARY], [replica("a", 160, traffic(1050, 1050), traffic(40))], 160) == []


def test_a_restarted_replica_counts_from_zero():
    judge = Judge()
    judge.verdicts([CANARY], [replica("a", 100, traffic(500, 0), traffic(10))], 100)
    [verdict] = judge.verdicts([CANARY], [replica("a", 105, traffic(60, 60), traffic(10))], 105)
    assert "60 candidate requests" in verdict.reason


def test_held_or_ruleless_candidates_are_not_judged():
    held = Pointer("routing", "default", 1, 3, Candidate(7, 0, ("error_rate > 0.2",), 1, 30.0))
    ruleless = Pointer("routing", "default", 1, 3, Candidate(7, 5000))
    bad = [replica("a", 100, traffic(100, 100), traffic(1))]
    assert Judge().verdicts([held, ruleless], bad, 100) == []


def test_traffic_by_position_reads_the_engine_metrics():
    def series(routing: int, candidates: int, status: int, count: int) -> list:
        buckets = [0] * N
        buckets[1] = count
        key = {"policy_version": 1, "routing_version": routing, "config_version": 1, "candidates": candidates,
               "api": "chat", "status": status, "cache": "miss"}  # fmt: skip
        return [key, {"count": count, "sum_seconds": 0.0, "buckets": buckets}]

    metrics = {
        "requests": [
            series(7, 2, 200, 5),
            series(7, 2, 502, 3),
            series(1, 0, 200, 10),
            series(1, 2, 200, 99),  # another pointer's candidate: not this canary's
            series(7, 0, 200, 99),  # version 7 served as current somewhere else
        ],
        "shadow": [],
        "cache": {},
    }
    got = traffic_by_position(msgspec.json.encode(metrics), [CANARY, Pointer("policy", "default", 1, 1)])
    assert list(got) == ["routing/default"]
    assert (got["routing/default"]["candidate"].requests, got["routing/default"]["candidate"].errors) == (8, 3)
    assert got["routing/default"]["current"].requests == 10


def test_a_new_stage_is_judged_on_its_own_traffic():
    judge = Judge()
    judge.verdicts([CANARY], [replica("a", 100, traffic(0), traffic(10))], 100)
    assert judge.verdicts([CANARY], [replica("a", 105, traffic(60, 60), traffic(20))], 105)  # failing: held
    resumed = msgspec.structs.replace(CANARY, change_id=4)  # the canary resumed by a later change
    # The same cumulative counts, now healthy: the old failures are not in the new stage's window.
    assert judge.verdicts([resumed], [replica("a", 106, traffic(60, 60), traffic(20))], 106) == []
    assert judge.verdicts([resumed], [replica("a", 110, traffic(160, 60), traffic(40))], 110) == []
