"""The propagation barrier (docs/ROLLBACK.md R4): a change is in effect only when every live
replica has acknowledged it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec

from gatewayd.control.model import Ack, Change

if TYPE_CHECKING:
    from gatewayd.control.registry import Registry

LIVE_WITHIN_S = 3.0  # a replica whose heartbeat is older than this is not waited for
POLL_S = 0.005


class ReplicaAnswer(msgspec.Struct, frozen=True):
    replica: str
    state: str  # "in sync" | "refused" | "no answer"
    after_ms: float | None  # acknowledgement time after the flip; None without an answer
    error: str  # why it refused; empty otherwise


class BarrierOutcome(msgspec.Struct, frozen=True):
    """The report as data, for the admin API: the same facts `render` prints."""

    change: Change
    ok: bool
    summary: str
    replicas: list[ReplicaAnswer]
    last_ack_ms: float | None
    waited_s: float


class BarrierReport(msgspec.Struct, frozen=True):
    change: Change
    expected: list[str]
    acks: list[Ack]
    waited_s: float

    @property
    def refused(self) -> list[Ack]:
        return [a for a in self.acks if not a.ok]

    @property
    def missing(self) -> list[str]:
        answered = {a.replica for a in self.acks}
        return [r for r in self.expected if r not in answered]

    @property
    def ok(self) -> bool:
        return not self.refused and not self.missing

    def answers(self) -> list[ReplicaAnswer]:
        """One per replica that was live at the flip, in name order."""
        by_name = {a.replica: a for a in self.acks}
        out = []
        for name in self.expected:
            ack = by_name.get(name)
            if ack is None:
                out.append(ReplicaAnswer(name, "no answer", None, ""))
            else:
                after = round((ack.at - self.change.at) * 1000, 3)
                out.append(ReplicaAnswer(name, "in sync" if ack.ok else "refused", after, ack.error))
        return out

    @property
    def last_ack_ms(self) -> float | None:
        done = [a.at for a in self.acks if a.ok]
        return round((max(done) - self.change.at) * 1000, 3) if done else None

    @property
    def summary(self) -> str:
        if not self.expected:
            return "no live replicas: the change is stored and applies when replicas start"
        done = sum(1 for a in self.acks if a.ok)
        last = f"{self.last_ack_ms:.1f} ms" if self.last_ack_ms is not None else "-"
        verdict = "in effect" if self.ok else "NOT in effect"
        return f"{verdict}: {done}/{len(self.expected)} replicas acknowledged; last acknowledgement after {last}"

    def outcome(self) -> BarrierOutcome:
        waited = round(self.waited_s, 3)
        return BarrierOutcome(self.change, self.ok, self.summary, self.answers(), self.last_ack_ms, waited)

    def render(self) -> str:
        lines = [self.summary]
        for answer in self.answers():
            if answer.state == "no answer":
                lines.append(f"  {answer.replica:<24} NO ANSWER")
            elif answer.state == "in sync":
                lines.append(f"  {answer.replica:<24} in sync     +{answer.after_ms:7.1f} ms")
            else:
                lines.append(f"  {answer.replica:<24} REFUSED     {answer.error}")
        return "\n".join(lines)


def wait_for_acks(registry: Registry, change: Change, timeout_s: float) -> BarrierReport:
    """Waits until every replica that was live at the flip has answered, or the timeout."""
    expected = sorted(r.name for r in registry.replicas() if r.heartbeat_at >= change.at - LIVE_WITHIN_S)
    start = time.monotonic()
    while True:
        acks = [a for a in registry.acks(change.id) if a.replica in expected]
        if len(acks) == len(expected) or time.monotonic() - start >= timeout_s:
            return BarrierReport(change, expected, acks, time.monotonic() - start)
        time.sleep(POLL_S)
