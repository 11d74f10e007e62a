"""The propagation barrier (ROLLBACK.md R4): a change is in effect only when every live
replica has acknowledged it."""

from __future__ import annotations

import time

import msgspec

from gatewayd.control.model import Ack, Change

LIVE_WITHIN_S = 3.0  # a replica whose heartbeat is older than this is not waited for
POLL_S = 0.005


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

    def render(self) -> str:
        if not self.expected:
            return "no live replicas: the change is stored and applies when replicas start"
        lines = []
        by_name = {a.replica: a for a in self.acks}
        for name in self.expected:
            ack = by_name.get(name)
            if ack is None:
                lines.append(f"  {name:<24} NO ANSWER")
            elif ack.ok:
                lines.append(f"  {name:<24} in sync     +{(ack.at - self.change.at) * 1000:7.1f} ms")
            else:
                lines.append(f"  {name:<24} REFUSED     {ack.error}")
        done = [a.at for a in self.acks if a.ok]
        last = f"{(max(done) - self.change.at) * 1000:.1f} ms" if done else "-"
        verdict = "in effect" if self.ok else "NOT in effect"
        head = f"{verdict}: {len(done)}/{len(self.expected)} replicas acknowledged; last acknowledgement after {last}"
        return "\n".join([head, *lines])


def wait_for_acks(store, change: Change, timeout_s: float) -> BarrierReport:
    """Waits until every replica that was live at the flip has answered, or the timeout."""
    expected = sorted(r.name for r in store.replicas() if r.heartbeat_at >= change.at - LIVE_WITHIN_S)
    start = time.monotonic()
    while True:
        acks = [a for a in store.acks(change.id) if a.replica in expected]
        if len(acks) == len(expected) or time.monotonic() - start >= timeout_s:
            return BarrierReport(change, expected, acks, time.monotonic() - start)
        time.sleep(POLL_S)
