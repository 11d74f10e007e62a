"""Budgets per key and per tenant, enforced before the upstream call against counters the
whole cluster shares (Redis, or the embedded store on one host), charged with the actual
cost after the answer.

The store stays off the request path: each replica adds its charges to the shared
counters and reads their totals back a few times a second, in a thread of its own; a check
compares the last totals read plus this replica's charges not yet sent. So a budget spent
across replicas stops all of them within one exchange (`EXCHANGE_S`), and the overshoot is
bounded by what the cluster serves in that time. When the store does not answer, charges
are kept (and sent when it is back) and enforcement goes on per replica, from the last
totals read plus this replica's own spend since: `/readyz` says so, and it is logged. It
never fails open silently.
"""

from __future__ import annotations

import logging
import threading
import time

from gatewayd.control.keys import Budget, period_of
from gatewayd.control.model import StoreUnavailableError

EXCHANGE_S = 0.25
WARN_AT = 0.8  # the share of a budget at which a warning is logged, once per period
log = logging.getLogger("gatewayd.budgets")


class Exceeded:
    """Why a request may not start: which budget, how much of it is used, when it resets."""

    __slots__ = ("owner", "budget", "used", "resets_at")

    def __init__(self, owner: str, budget: Budget, used: float, resets_at: float):
        self.owner, self.budget, self.used, self.resets_at = owner, budget, used, resets_at

    def message(self, currency: str) -> str:
        unit = currency if self.budget.unit == "usd" else "tokens"
        resets = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.resets_at))
        kind, _, name = self.owner.partition(":")
        return (
            f"budget of {kind} {name} ({self.budget.amount:g} {unit} per {self.budget.period}) is spent: "
            f"{self.used:g} {unit} used; it resets at {resets}"
        )


class BudgetLedger:
    def __init__(self, store, replica: str):
        self.store = store  # a store handle of its own: it is used from the ledger's thread
        self.replica = replica
        self._pending: dict[str, list[float]] = {}  # counter -> [cost, tokens] not sent yet
        self._sending: dict[str, list[float]] = {}  # being sent: counted until the totals are read back
        self._totals: dict[str, tuple[float, int]] = {}  # counter -> the cluster's, as last read
        self._watched: set[str] = set()  # counters checked lately: their totals are re-read
        self._levels: dict[str, tuple[Budget, str]] = {}  # counter -> its budget and owner, for /metrics
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self.unavailable = ""  # why the store did not answer at the last exchange; empty: it did
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._period_cache: dict[str, tuple[int, str, float]] = {}  # period -> (second, id, resets at)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"budgets-{self.replica}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self.exchange()  # what was charged since the last exchange is not lost

    def _period(self, period: str, now: float) -> tuple[str, float]:
        second = int(now)
        cached = self._period_cache.get(period)
        if cached is None or cached[0] != second:
            ident, resets = period_of(period, now)
            cached = self._period_cache[period] = (second, ident, resets)
        return cached[1], cached[2]

    def check(self, budgets: list[tuple[str, Budget]], now: float) -> Exceeded | None:
        """The first of (owner, budget) that is spent, or None: the request may start."""
        for owner, budget in budgets:
            period, resets = self._period(budget.period, now)
            counter = f"{owner}@{period}"
            used = self._used(counter, budget)
            if counter not in self._watched:
                with self._lock:
                    self._watched.add(counter)
                    self._levels[counter] = (budget, owner)
            if used >= budget.amount:
                return Exceeded(owner, budget, used, resets)
        return None

    def _used(self, counter: str, budget: Budget) -> float:
        cost, tokens = self._totals.get(counter, (0.0, 0))
        for unsent in (self._pending, self._sending):
            row = unsent.get(counter)
            if row is not None:
                cost, tokens = cost + row[0], tokens + int(row[1])
        return cost if budget.unit == "usd" else float(tokens)

    def charge(self, owners: list[tuple[str, Budget | None]], cost: float, tokens: int, now: float) -> None:
        """Adds an answer's actual cost and tokens to each owner's counter of the period
        (an owner without a budget: this month's), and warns once at WARN_AT of a budget."""
        with self._lock:
            for owner, budget in owners:
                period, _ = self._period(budget.period if budget else "month", now)
                counter = f"{owner}@{period}"
                row = self._pending.get(counter)
                if row is None:
                    row = self._pending[counter] = [0.0, 0]
                row[0] += cost
                row[1] += tokens
                if budget is not None and counter not in self._warned:
                    used = self._used(counter, budget)
                    if used >= WARN_AT * budget.amount:
                        self._warned.add(counter)
                        log.warning(
                            "budget of %s at %.0f%%: %g of %g (%s per %s)",
                            owner.replace(":", " "),
                            100 * used / budget.amount,
                            used,
                            budget.amount,
                            budget.unit,
                            budget.period,
                        )

    def levels(self) -> list[tuple[str, str, str, float]]:
        """(owner, period, unit, share used) of every budget checked here, for /metrics."""
        out = []
        for counter, (budget, owner) in list(self._levels.items()):
            period = counter.rpartition("@")[2]
            out.append((owner, period, budget.unit, self._used(counter, budget) / budget.amount))
        return out

    def _run(self) -> None:
        while not self._stop.wait(EXCHANGE_S):
            self.exchange()

    def exchange(self) -> None:
        """Sends the charges not sent yet and reads back the totals of the watched counters."""
        with self._lock:
            sending = self._sending = self._pending
            self._pending = {}
            watched = list(self._watched | set(sending))
        try:
            if sending:
                self.store.add_spend({c: (cost, int(tokens)) for c, (cost, tokens) in sending.items()})
            totals = self.store.spend(watched)
        except StoreUnavailableError as exc:
            with self._lock:  # kept, to be sent when the store is back; counted here meanwhile
                for counter, (cost, tokens) in sending.items():
                    row = self._pending.setdefault(counter, [0.0, 0])
                    row[0] += cost
                    row[1] += tokens
                self._sending = {}
            if not self.unavailable:
                log.error("budgets enforced per replica: %s", exc)
            self.unavailable = str(exc)
            return
        if self.unavailable:
            log.warning("budgets enforced cluster-wide again: the control store answers")
            self.unavailable = ""
        with self._lock:
            self._totals, self._sending = totals, {}

    def readiness(self) -> str:
        """What /readyz says about budget enforcement."""
        if self.unavailable:
            return f"per-replica (control store unreachable: {self.unavailable})"
        return "cluster"


def budgets_of(caller, config) -> list[tuple[str, Budget]]:
    """The budgets a request of `caller` must fit in: its key's, its tenant's (config)."""
    out = []
    if caller.budget is not None:
        out.append((f"key:{caller.key}", caller.budget))
    tenant = config.budgets.get(caller.tenant)
    if tenant is not None:
        out.append((f"tenant:{caller.tenant}", tenant))
    return out


def charged(caller, config) -> list[tuple[str, Budget | None]]:
    """Whose counters an answer's cost goes to: a run-time key's (for `keys list`, budget
    or not), and its tenant's when the tenant has a budget."""
    out: list[tuple[str, Budget | None]] = []
    if caller.runtime:
        out.append((f"key:{caller.key}", caller.budget))
    tenant = config.budgets.get(caller.tenant)
    if tenant is not None:
        out.append((f"tenant:{caller.tenant}", tenant))
    return out
