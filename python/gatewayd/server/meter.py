"""What each answered request consumed and cost, priced when its record is written, and
the counters `/metrics` shows by tenant, key, model, provider and price version.

The counters count exactly the records that carry usage, after each is written, so
`gatewayd usage` over the audit chains totals the same figures.
"""

from __future__ import annotations

from gatewayd.control.documents import Price, Prices
from gatewayd.server.usage import Counts, cost

# (tenant, key, model, provider, price version, currency)
UsageLabels = tuple[str, str, str, str, int, str]
# requests, prompt, completion, cached tokens, cost; then a cache hit's saved prompt,
# completion tokens and cost
MAX_PRICES = 4096  # (config version, provider, model) prices remembered before starting over
FIELDS = ("requests", "prompt", "completion", "cached", "cost", "saved_prompt", "saved_completion", "saved_cost")


class Priced:
    """One record's usage as the audit record takes it; never changed once made (a hit's
    is shared by every hit on the same answer)."""

    __slots__ = ("counts", "cost", "currency", "version", "saved")

    def __init__(self, counts: Counts, cost: float | None, currency: str, version: int, saved: bool):
        self.counts, self.cost, self.currency, self.version, self.saved = counts, cost, currency, version, saved

    def record_fields(self) -> tuple[int, int, int, float | None, bool]:
        return (*self.counts, self.cost, self.saved)


class Meter:
    def __init__(self) -> None:
        self.totals: dict[UsageLabels, list[float]] = {}
        # A config version's prices never change: each model's is looked up (globs) once.
        self._prices: dict[tuple[int, str, str], Price | None] = {}
        # And every hit on one cached answer saves the same: its price is worked out once.
        self._savings: dict[tuple[int, str, str, Counts], Priced] = {}

    def price(self, prices: Prices, version: int, provider: str, model: str, counts: Counts, saved: bool) -> Priced:
        """Prices `counts` under config version `version`'s prices."""
        if saved:
            hit = (version, provider, model, counts)
            priced = self._savings.get(hit)
            if priced is None:
                if len(self._savings) >= MAX_PRICES:
                    self._savings.clear()
                priced = self._savings[hit] = self._price(prices, version, provider, model, counts, saved)
            return priced
        return self._price(prices, version, provider, model, counts, saved)

    def _price(self, prices: Prices, version: int, provider: str, model: str, counts: Counts, saved: bool) -> Priced:
        memo = (version, provider, model)
        if memo in self._prices:
            price = self._prices[memo]
        else:
            if len(self._prices) >= MAX_PRICES:
                self._prices.clear()
            price = self._prices[memo] = prices.price(provider, model)
        return Priced(counts, cost(price, counts), prices.currency, version, saved)

    def count(self, tenant: str, key: str, model: str, provider: str, priced: Priced) -> None:
        """Adds a written record's usage to the counters."""
        labels = (tenant, key, model, provider, priced.version, priced.currency)
        row = self.totals.get(labels)
        if row is None:
            row = self.totals[labels] = [0] * len(FIELDS)
        row[0] += 1
        prompt, completion, cached = priced.counts
        if priced.saved:
            row[5] += prompt
            row[6] += completion
            row[7] += priced.cost or 0.0
        else:
            row[1] += prompt
            row[2] += completion
            row[3] += cached
            row[4] += priced.cost or 0.0

    def rows(self) -> list[tuple[UsageLabels, list[float]]]:
        return list(self.totals.items())
