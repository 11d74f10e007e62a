"""Per-tenant rate limits: a token bucket per tenant in each replica.

The limit itself is versioned config (it rolls back like everything else); the buckets
are this replica's running state. With N replicas a tenant may get up to N times the
limit: a limit shared across replicas needs the control store on the request path.
"""

from __future__ import annotations

import time

from gatewayd.control.documents import RateLimit


class TenantLimiter:
    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, last refill)

    def admit(self, tenant: str, limit: RateLimit) -> float:
        """0.0 when the request may go, else the seconds until a token is due."""
        rate = limit.requests_per_minute
        if rate <= 0:
            return 0.0
        capacity = float(limit.burst or max(1, rate // 10))
        now = time.monotonic()
        tokens, last = self._buckets.get(tenant, (capacity, now))
        tokens = min(capacity, tokens + (now - last) * rate / 60.0)
        if tokens >= 1.0:
            self._buckets[tenant] = (tokens - 1.0, now)
            return 0.0
        self._buckets[tenant] = (tokens, now)
        return (1.0 - tokens) * 60.0 / rate
