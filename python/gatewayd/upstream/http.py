"""The gateway's HTTP client towards providers: one pooled client per worker, two transports.

Chosen by bench/upstream_clients.py (figures in bench/results/upstream_clients.json):
- **whole responses** (``stream=False``) go through rnet (Rust, hyper underneath): a
  pass-through costs about a fifth less CPU than through aiohttp, and the HTTP work runs
  on rnet's own thread rather than the event loop's;
- **streams** (``stream=True``) go through aiohttp: it hands over whatever has arrived as
  one chunk on the loop's own thread, where rnet pays a cross-thread wake-up per chunk,
  which made a streamed pass-through almost twice as expensive.
Both were chosen over pyreqwest, the cheapest client per request, because cancellation
reaches the wire: a cancelled or timed-out request closes its connection at once, so a
caller that gives up frees its pool slot and stops the provider's work; pyreqwest keeps
such a request running until the provider answers.

Only this package knows the libraries: the pipeline sees ``UpstreamClient``,
``UpstreamResponse`` and one exception type. Bodies and their ``content-encoding`` pass
through untouched (no decompression, no redirects, no cookies): the gateway relays what
the provider said, and callers never share state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from gatewayd.upstream.aiohttp_transport import StreamTransport
from gatewayd.upstream.errors import UpstreamError
from gatewayd.upstream.rnet_transport import WholeTransport

__all__ = ["UpstreamClient", "UpstreamError", "UpstreamResponse"]

# Framing and routing headers are the transport's to set, never the caller's.
TRANSPORT_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive"})


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

    def __init__(self, *, max_connections: int = 512, connect_timeout: float = 5.0) -> None:
        self._whole = WholeTransport(max_connections, connect_timeout)
        self._streams = StreamTransport(max_connections, connect_timeout)
        self._started = False

    async def start(self) -> None:
        await self._whole.start()
        await self._streams.start()
        self._started = True

    async def close(self) -> None:
        await self._whole.close()
        await self._streams.close()
        self._started = False

    async def send(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        timeout: float,
        *,
        stream: bool = False,
    ) -> UpstreamResponse:
        """Send the request and return once the response headers are in.

        ``stream`` says how the body will be read and picks the transport. A stream's
        ``timeout`` bounds the wait for the headers, then each wait for body bytes; a whole
        response is read before this returns, all of it within ``timeout``. Cancelling the
        call aborts the request.
        """
        if not self._started:
            raise RuntimeError("UpstreamClient.send() before start()")
        headers = [(k, v) for k, v in headers if k.lower() not in TRANSPORT_HEADERS]
        transport = self._streams if stream else self._whole
        return await transport.send(method, url, headers, body, timeout)
