"""The four scenarios of the rollback contract, as the drill runs and judges them.

Each change scenario makes a change, lets traffic run under it, reverts it, and is judged
on what the replicas acknowledged and what the audit chains say was served:
1. policy: a policy version activated, then rolled back;
2. routing: a routing candidate on another provider at 25 %, then rolled back;
3. config: a config version that changes what is cached, then rolled back;
4. audit: every chain verifies, records exist before, during and after every change, and
   every version a record names resolves in the registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gatewayd.control import positions
from gatewayd.control.barrier import BarrierReport, wait_for_acks
from gatewayd.control.model import Change
from gatewayd.control.registry import Registry

SCENARIOS = ("policy", "routing", "config", "audit")
LAST_REQUEST_LIMIT_S = 1.0  # the last request under a reverted version starts within this of the command
ACK_TIMEOUT_S = 10.0


@dataclass
class Mark:
    """One command: when it was issued, when its change was recorded, and each replica's
    acknowledgement."""

    name: str
    change: int
    issued: float
    flipped: float
    returned: float
    acks: dict[str, float]
    ok: bool
    report: str

    @property
    def last_ack_ms(self) -> float:
        return (max(self.acks.values(), default=self.flipped) - self.flipped) * 1000


@dataclass
class Run:
    """A change scenario as it ran: the version it reverted and its commands."""

    name: str
    domain: str
    version: int
    started: float
    marks: list[Mark] = field(default_factory=list)
    ended: float = 0.0

    @property
    def change(self) -> Mark:
        return self.marks[0]

    @property
    def revert(self) -> Mark:
        return self.marks[-1]


def _timed(name: str, registry: Registry, flip: Callable[[], Change]) -> Mark:
    issued = time.time()
    change = flip()
    report: BarrierReport = wait_for_acks(registry, change, ACK_TIMEOUT_S)
    return Mark(
        name, change.id, issued, change.at, time.time(), {a.replica: a.at for a in report.acks}, report.ok,
        report.render(),
    )  # fmt: skip


def change_and_revert(registry: Registry, name: str, phase_s: float, progress: Callable[[str], None]) -> Run:
    """Runs one change scenario: before, change, during, revert, after, `phase_s` each."""
    domain, document, how = {
        "policy": ("policy", _policy(), "activate"),
        "routing": ("routing", _routing(registry), "canary"),
        "config": ("config", _config(registry), "activate"),
    }[name]
    version = registry.push(domain, document, f"drill-{name}.yaml", "drill", f"drill: the {name} change").id
    run = Run(name, domain, version, time.time())
    progress(f"{name}: before")
    time.sleep(phase_s)
    if how == "canary":
        flip = lambda: positions.canary(registry, domain, "default", version, 25, "drill", "drill: canary")  # noqa: E731
    else:
        flip = lambda: registry.activate(domain, version, "drill", f"drill: activate {name}")  # noqa: E731
    run.marks.append(_timed("change", registry, flip))
    progress(f"{name}: during")
    time.sleep(phase_s)
    run.marks.append(_timed("revert", registry, lambda: registry.rollback(domain, "drill", f"drill: revert {name}")))
    progress(f"{name}: after")
    time.sleep(phase_s)
    run.ended = time.time()
    return run


def _policy() -> bytes:
    return (
        b"default: allow\nrules:\n"
        b"  - {id: drill-never-matches, when: {prompt: {keywords: [drill-unused-word]}}, action: deny}\n"
    )


def _routing(registry: Registry) -> bytes:
    """The current routing, with its first provider replaced by another one configured."""
    current = registry.active("routing")
    assert current is not None
    _, text = registry.document("routing", current)
    kinds = dict(registry.providers)
    used = next((n for n in kinds if f"provider: {n}" in text.decode()), None)
    other = next((n for n in kinds if used is not None and n != used and kinds[n] == kinds[used]), None)
    if used is None or other is None:
        return text  # the same routing as a candidate: still a revert of a candidate position
    return text.replace(f"provider: {used}".encode(), f"provider: {other}".encode(), 1)


def _config(registry: Registry) -> bytes:
    """The current config as another version: answers it caches are keyed by its version,
    apart from the current one's, so any served after the revert would be stale."""
    current = registry.active("config")
    assert current is not None
    _, text = registry.document("config", current)
    return text + f"\n# drill: the config change of {time.time():.0f}\n".encode()
