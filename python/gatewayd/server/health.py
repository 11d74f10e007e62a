"""Passive provider health in one replica, after Envoy's outlier detection: a provider
that fails requests `after_failures` times in a row is ejected for `for_s` seconds, so
requests go straight to its fallbacks instead of waiting on it (a provider that hangs
would otherwise cost every request a full timeout). Once the time is up the next request
tries it again: a success restores it, a failure ejects it at once (half-open).

Failures are what fails a request over (gatewayd.server.pipeline.FAILOVER_STATUSES, no
connection, no headers in time). The state is this replica's own, like the rate limiter's.
"""

from __future__ import annotations

from gatewayd.control.documents import Ejection


class ProviderHealth:
    def __init__(self) -> None:
        self._failures: dict[str, int] = {}  # provider -> failures in a row
        self._ejected_until: dict[str, float] = {}  # provider -> monotonic time

    def available(self, provider: str, now: float) -> bool:
        until = self._ejected_until.get(provider)
        return until is None or now >= until

    def failed(self, provider: str, now: float, rule: Ejection) -> bool:
        """Counts a failure; True when it ejects a provider that was not ejected (one log
        line per ejection, however many requests a provider without fallbacks fails)."""
        failures = self._failures.get(provider, 0) + 1
        self._failures[provider] = failures
        if not rule.after_failures or failures < rule.after_failures:
            return False
        newly = self.available(provider, now)
        self._ejected_until[provider] = now + rule.for_s
        return newly

    def succeeded(self, provider: str) -> None:
        if self._failures:  # the common case, nothing ever failed, costs one truth test
            self._failures.pop(provider, None)
            self._ejected_until.pop(provider, None)

    def ejected(self, now: float) -> list[str]:
        """The providers ejected right now (for /readyz)."""
        return sorted(name for name, until in self._ejected_until.items() if now < until)
