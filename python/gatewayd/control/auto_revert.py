"""Automatic revert of a canary (docs/ROLLBACK.md R13): rules on a candidate, judged over
every replica's recent traffic, that hold the candidate at 0 % when one holds.

A rule is `METRIC OP NUMBER` or `METRIC OP NUMBER * current`: METRIC one of error_rate
(5xx answers per request), p50_ms, p95_ms, p99_ms; OP one of > >= < <=. The relative form
compares the candidate with what the current version served over the same window.

Replicas count their own traffic by position (`traffic_by_position`, from the request
metrics) and send it with their heartbeats; every replica's agent judges the sum over
live replicas (`Judge`), and the first to see a rule hold moves the share to 0 by
compare-and-set, so one change record is written however many replicas saw it.
"""

from __future__ import annotations

import math
import operator
import re
from collections import deque
from collections.abc import Callable, Iterable

import msgspec

from gatewayd import _core
from gatewayd.control.model import Candidate, Pointer, PositionTraffic, RegistryError, Replica

METRICS = ("error_rate", "p50_ms", "p95_ms", "p99_ms")
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
DEFAULT_MIN_REQUESTS = 100
DEFAULT_WINDOW_S = 60.0
_RULE = re.compile(r"\s*(\w+)\s*(>=|<=|>|<)\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(\*\s*current)?\s*")
VERSION_FIELD = {"policy": "policy_version", "routing": "routing_version", "config": "config_version"}
CANDIDATE_BIT = {"policy": 1, "routing": 2, "config": 4}


class Rule(msgspec.Struct, frozen=True):
    text: str
    metric: str
    op: str
    value: float
    relative: bool  # value times what the current version shows

    def judge(self, candidate: PositionTraffic, current: PositionTraffic) -> tuple[bool, str]:
        """Whether the rule holds, and the figures that decided it."""
        seen = measure(self.metric, candidate)
        if self.relative:
            base = measure(self.metric, current)
            if current.requests == 0 or math.isnan(base):
                return False, f"{self.metric}: no current traffic to compare with"
            limit = self.value * base
            figures = f"{self.metric} {_fmt(seen)} on the candidate against {_fmt(base)} on current"
        else:
            limit = self.value
            figures = f"{self.metric} {_fmt(seen)} on the candidate"
        return (not math.isnan(seen) and OPERATORS[self.op](seen, limit)), figures


def parse_rule(text: str) -> Rule:
    """A rule from its text; RegistryError naming it when it is not one."""
    found = _RULE.fullmatch(text)
    if not found or found.group(1) not in METRICS:
        raise RegistryError(
            f"--revert-if {text!r}: expected METRIC OP NUMBER [* current], METRIC one of "
            f"{', '.join(METRICS)}, OP one of {' '.join(OPERATORS)} (e.g. 'error_rate > 0.05', 'p95_ms > 3 * current')"
        )
    metric, op, value, relative = found.groups()
    return Rule(text.strip(), metric, op, float(value), relative is not None)


def with_rules(
    domain: str,
    candidate: Candidate,
    rules: Iterable[str],
    min_requests: int | None,
    window_s: float | None,
    allow_policy: bool,
) -> Candidate:
    """The candidate carrying checked revert rules. Refused for policy unless allowed: a
    policy's error rate is rarely its fault alone."""
    texts = tuple(parse_rule(rule).text for rule in rules)
    if not texts:
        if min_requests is not None or window_s is not None:
            raise RegistryError("--min-requests and --window go with --revert-if")
        return candidate
    if domain == "policy" and not allow_policy:
        raise RegistryError(
            "automatic revert of a policy candidate is off: a policy's error rate is rarely unambiguous "
            "(--allow-policy-revert to have it anyway)"
        )
    minimum = DEFAULT_MIN_REQUESTS if min_requests is None else min_requests
    window = DEFAULT_WINDOW_S if window_s is None else window_s
    if minimum < 1 or not 1 <= window <= 3600:
        raise RegistryError("--min-requests: at least 1; --window: 1 to 3600 seconds")
    return msgspec.structs.replace(candidate, revert_if=texts, min_requests=int(minimum), window_s=float(window))


def rules_for(
    domain: str, revert_if: list[str], min_requests: int | None, window_s: float | None, allow_policy: bool
) -> Callable[[Candidate], Candidate] | None:
    """What gives a candidate the operator's revert rules (`positions.canary`'s `revert`),
    or None when the operator gave none (a running candidate keeps its own)."""
    if not revert_if and min_requests is None and window_s is None:
        return None

    def give(candidate: Candidate) -> Candidate:
        return with_rules(domain, candidate, revert_if, min_requests, window_s, allow_policy)

    return give


def measure(metric: str, traffic: PositionTraffic) -> float:
    if traffic.requests == 0:
        return math.nan
    if metric == "error_rate":
        return traffic.errors / traffic.requests
    return quantile(traffic.buckets, {"p50_ms": 0.5, "p95_ms": 0.95, "p99_ms": 0.99}[metric]) * 1000


def quantile(buckets: tuple[int, ...], q: float) -> float:
    """The upper bound (seconds) of the histogram bucket holding the q-quantile; +Inf past
    the last bound."""
    total, running = sum(buckets), 0
    for bound, count in zip((*_core.LATENCY_BUCKETS, math.inf), buckets, strict=True):
        running += count
        if running >= q * total:
            return bound
    return math.inf


def traffic_by_position(metrics_json: bytes, pointers: Iterable[Pointer]) -> dict[str, dict[str, PositionTraffic]]:
    """This replica's traffic, since it started, on each position of every pointer with a
    candidate serving traffic, from the engine's request metrics (for the revert rules, and
    for `status`). A request counts for the candidate when it was served its version from
    the candidate position, and for current when served the current version from the
    current one."""
    watched = [p for p in pointers if p.candidate is not None and p.candidate.serves]
    if not watched:
        return {}
    series = msgspec.json.decode(metrics_json, type=_EngineMetrics).requests
    out = {}
    for p in watched:
        assert p.candidate is not None
        field, bit = VERSION_FIELD[p.domain], CANDIDATE_BIT[p.domain]
        sums = {"candidate": _Sum(), "current": _Sum()}
        for key, hist in series:
            version, on_candidate = getattr(key, field), bool(key.candidates & bit)
            if on_candidate and version == p.candidate.version:
                sums["candidate"].add(key.status, hist)
            elif not on_candidate and version == p.version:
                sums["current"].add(key.status, hist)
        out[f"{p.domain}/{p.scope}"] = {name: s.traffic() for name, s in sums.items()}
    return out


class Verdict(msgspec.Struct, frozen=True):
    pointer: Pointer
    rule: str
    reason: str  # the change record's: the rule and the figures


class Judge:
    """Every replica's heartbeated traffic over time, so each canary's rules are judged on
    the window's difference, summed over replicas (a restarted replica counts from 0)."""

    def __init__(self) -> None:
        self._samples: dict[tuple[str, str, str, int], deque[tuple[float, PositionTraffic]]] = {}

    def verdicts(self, pointers: Iterable[Pointer], replicas: Iterable[Replica], now: float) -> list[Verdict]:
        replicas = list(replicas)
        pointers = list(pointers)
        stages = {p.change_id for p in pointers}
        for stale in [k for k in self._samples if k[3] not in stages]:  # stages gone by
            del self._samples[stale]
        out = []
        for p in pointers:
            candidate = p.candidate
            if candidate is None or not candidate.revert_if or candidate.share == 0:
                continue
            key = f"{p.domain}/{p.scope}"
            window = {
                name: self._window(key, p.change_id, name, replicas, now, candidate.window_s) for name in _POSITIONS
            }
            if window["candidate"].requests < candidate.min_requests:
                continue
            for text in candidate.revert_if:
                held, figures = parse_rule(text).judge(window["candidate"], window["current"])
                if held:
                    served = f"{window['candidate'].requests} candidate requests in the last {candidate.window_s:g} s"
                    reason = f"automatic revert: '{text}' held ({figures}; {served})"
                    out.append(Verdict(p, text, reason))
                    break
        return out

    def _window(
        self, key: str, stage: int, position: str, replicas: list[Replica], now: float, window_s: float
    ) -> PositionTraffic:
        """The traffic of the window, counted from the first heartbeat seen in this stage of
        the canary (`stage`: the change that set it), so a resumed or reshared candidate is
        judged on its own traffic, not on what came before."""
        total = _Sum()
        for r in replicas:
            current = r.traffic.get(key, {}).get(position)
            samples = self._samples.setdefault((r.name, key, position, stage), deque())
            if current is None:
                samples.clear()
                continue
            if not samples or samples[-1][1] != current:
                samples.append((r.heartbeat_at, current))
            while len(samples) > 1 and samples[1][0] <= now - window_s:
                samples.popleft()
            first = samples[0][1]
            total.extend(current if current.requests < first.requests else _minus(current, first))
        return total.traffic()


_POSITIONS = ("candidate", "current")


class _SeriesKey(msgspec.Struct):
    policy_version: int
    routing_version: int
    config_version: int
    status: int
    candidates: int = 0


class _Histogram(msgspec.Struct):
    count: int
    buckets: list[int]


class _EngineMetrics(msgspec.Struct):
    requests: list[tuple[_SeriesKey, _Histogram]]


class _Sum:
    def __init__(self) -> None:
        self.requests = self.errors = 0
        self.buckets = [0] * (len(_core.LATENCY_BUCKETS) + 1)

    def add(self, status: int, hist: _Histogram) -> None:
        self.requests += hist.count
        self.errors += hist.count if status >= 500 else 0
        self.buckets = [a + b for a, b in zip(self.buckets, hist.buckets, strict=True)]

    def extend(self, traffic: PositionTraffic) -> None:
        self.requests += traffic.requests
        self.errors += traffic.errors
        self.buckets = [a + b for a, b in zip(self.buckets, traffic.buckets, strict=True)]

    def traffic(self) -> PositionTraffic:
        return PositionTraffic(self.requests, self.errors, tuple(self.buckets))


def _minus(a: PositionTraffic, b: PositionTraffic) -> PositionTraffic:
    return PositionTraffic(
        a.requests - b.requests, a.errors - b.errors, tuple(x - y for x, y in zip(a.buckets, b.buckets, strict=True))
    )


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3g}"
