"""The gateway's HTTP client towards providers: one pooled client per worker.

HTTP/1.1 on the event loop's own thread (gatewayd.upstream.pool, parsing by httptools),
chosen by bench/upstream_clients.py over every library measured (figures in
bench/results/upstream_clients.json): the Rust clients (rnet, pyreqwest) run their I/O
on a thread of their own and pay a cross-thread wake-up at every hand-over, and aiohttp
spends far more Python per request. Through a bare granian pass-through on this 2-core
VM: 10,060 req/s at 32 connections (pyreqwest 8,090, rnet 7,670, aiohttp 6,190), 98 us
of CPU per request (123 to 160), p50 0.46 ms at one connection (0.52 to 0.58), and
streams at 7,200 req/s (aiohttp 5,010, rnet 2,740).

Cancellation reaches the wire: a cancelled or timed-out request closes its connection
at once, so a caller that gives up frees its slot and stops the provider's work.

Only this package knows how: the pipeline sees ``UpstreamClient``, ``UpstreamResponse``
and one exception type. Bodies and their ``content-encoding`` pass through untouched (no
decompression, no redirects, no cookies): the gateway relays what the provider said,
and callers never share state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from gatewayd.upstream.errors import UpstreamError
from gatewayd.upstream.pool import ConnectionPool

__all__ = ["UpstreamClient", "UpstreamError", "UpstreamResponse"]


class UpstreamResponse(Protocol):
    """A response whose body has not been read yet; read it once, by ``read`` or
    ``chunks``, then ``aclose`` it (the connection goes back to the pool only if the body
    was read to its end)."""

    status: int
    headers: list[tuple[bytes, bytes]]  # names lower-case

    async def read(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class UpstreamClient:
    """Connection-pooled client; ``start`` it inside the event loop that will use it."""

    def __init__(
        self, *, max_connections: int = 512, connect_timeout: float = 5.0, limits: dict[str, int] | None = None
    ) -> None:
        """``max_connections`` requests in flight per origin (scheme, host, port), or the
        number ``limits`` gives for a URL on that origin."""
        self._pool = ConnectionPool(max_connections, connect_timeout, limits or {})
        self._started = False

    async def start(self) -> None:
        await self._pool.start()
        self._started = True

    async def close(self) -> None:
        await self._pool.close()
        self._started = False

    async def send(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        timeout: float,
        *,
        stream: bool = False,
    ) -> UpstreamResponse:
        """Send the request and return once the response headers are in.

        ``stream`` says how the body will be read. A stream's ``timeout`` bounds the wait
        for the headers, then each wait for body bytes; a whole response is read before
        this returns, all of it within ``timeout``. Framing headers (host, content-length,
        ...) are the client's to set: the caller's are dropped. Cancelling the call aborts
        the request.
        """
        if not self._started:
            raise RuntimeError("UpstreamClient.send() before start()")
        return await self._pool.send(method, url, headers, body, timeout, stream)
