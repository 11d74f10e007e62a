"""Per-tenant rate limits: a token bucket per tenant in each replica.

The limit itself is versioned config (it rolls back like everything else); the buckets
are this replica's running state. Under `scope: replica` every replica allows the full
limit, so N replicas allow up to N times it; under `scope: cluster` each allows a 1/N
share, N being the live replicas its agent last counted, so the store stays off the
request path. A share is exact when the load balancer spreads a tenant evenly.
"""

from __future__ import annotations

import functools
import time

from gatewayd.control.documents import RateLimit


class TenantLimiter:
    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, last refill)

    def admit(self, tenant: str, limit: RateLimit, live_replicas: int = 1) -> float:
        """0.0 when the request may go, else the seconds until a token is due."""
        if limit.requests_per_minute <= 0:
            return 0.0
        share = max(1, live_replicas) if limit.scope == "cluster" else 1
        rate = limit.requests_per_minute / share
        capacity = max(1.0, (limit.burst or max(1, limit.requests_per_minute // 10)) / share)
        now = time.monotonic()
        tokens, last = self._buckets.get(tenant, (capacity, now))
        tokens = min(capacity, tokens + (now - last) * rate / 60.0)
        if tokens >= 1.0:
            self._buckets[tenant] = (tokens - 1.0, now)
            return 0.0
        self._buckets[tenant] = (tokens, now)
        return (1.0 - tokens) * 60.0 / rate


@functools.lru_cache(maxsize=256)
def key_limit(rpm: int, scope: str) -> RateLimit:
    """A key's `--rpm` as a limit like a tenant's, shared by the live replicas as the
    tenant limit is (`rate_limit.scope` of the request's config)."""
    return RateLimit(requests_per_minute=rpm, scope=scope)


def key_bucket(name: str) -> str:
    """A key's bucket among the tenants' (a NUL cannot be in a tenant's name from the TOML)."""
    return "key\x00" + name
