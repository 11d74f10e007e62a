"""The gateway's HTTP client towards providers: one pooled aiohttp session per worker.

Chosen by bench/upstream_clients.py (figures in bench/results/upstream_clients.json).
Through this wrapper a plain request costs about a fifth more CPU than with the cheapest
client, pyreqwest 0.15; a streamed event costs the same, and bursts less (whatever has
arrived is handed over as one chunk). What decided it: cancellation here reaches the
wire. A cancelled or timed-out request closes its connection at once, so a caller that
gives up frees its pool slot and stops the provider's work; pyreqwest keeps such a request
running until the provider answers, holding its slot, so one slow provider could starve
the pool for all.

Only this module knows the library: the pipeline sees ``UpstreamClient``/``UpstreamResponse``
and one exception type, so the transport can be swapped. Bodies and their
``content-encoding`` pass through untouched (no decompression, no redirects, no cookies):
the gateway relays what the provider said, and callers never share state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Literal

import aiohttp

ErrorKind = Literal["unreachable", "timeout", "protocol"]

# Framing and routing headers are the transport's to set, never the caller's.
_TRANSPORT_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive"})
# aiohttp adds these unless told not to; a proxy sends only what the pipeline chose.
_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")


class UpstreamError(Exception):
    """The provider could not be reached, stayed silent too long, or broke the exchange.

    ``kind`` is ``"unreachable"`` (no connection), ``"timeout"`` (no headers, or no body
    bytes, within the timeout) or ``"protocol"`` (connection lost or garbled mid-way).
    """

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind: ErrorKind = kind


class UpstreamClient:
    """Connection-pooled client; ``start`` it inside the event loop that will use it."""

    def __init__(self, *, max_connections: int = 512, connect_timeout: float = 5.0) -> None:
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._max_connections),
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_NO_AUTO_HEADERS,
            auto_decompress=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes, timeout: float
    ) -> UpstreamResponse:
        """Send the request and return once the response headers are in.

        ``timeout`` bounds the wait for the headers, then each wait for the next body bytes.
        Cancelling the call aborts the request. The caller must ``aclose`` the response.
        """
        if self._session is None:
            raise RuntimeError("UpstreamClient.send() before start()")
        try:
            response = await self._session.request(
                method,
                url,
                headers=[(k, v) for k, v in headers if k.lower() not in _TRANSPORT_HEADERS],
                data=body,
                allow_redirects=False,
                timeout=self._timeout(timeout),
            )
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise UpstreamError("unreachable", f"{url}: {exc}") from exc
        except aiohttp.ServerTimeoutError:
            raise UpstreamError("timeout", f"no response headers from {url} within {timeout}s") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError("protocol", f"{url}: {exc!r}") from exc
        return UpstreamResponse(response, timeout)

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        """Per-read timeout (headers, then every body read), no total: streams run long."""
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout, sock_read=seconds)
            self._timeouts[seconds] = timeout
        return timeout


class UpstreamResponse:
    """A response whose body has not been read yet; read it once, by ``read`` or ``chunks``."""

    __slots__ = ("status", "headers", "_response", "_timeout", "_complete")

    def __init__(self, response: aiohttp.ClientResponse, timeout: float) -> None:
        self.status: int = response.status
        self.headers: list[tuple[str, str]] = [
            (name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in response.raw_headers
        ]
        self._response = response
        self._timeout = timeout
        self._complete = False

    async def read(self) -> bytes:
        """The whole body."""
        with self._body_errors():
            body = await self._response.read()
        self._complete = True
        return body

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives off the wire: whatever has come in since the last chunk."""
        stream = self._response.content
        while True:
            with self._body_errors():
                chunk = await stream.readany()
            if not chunk:
                self._complete = True
                return
            yield chunk

    @contextmanager
    def _body_errors(self) -> Iterator[None]:
        """aiohttp's body errors, as the pipeline's UpstreamError kinds."""
        try:
            yield
        except aiohttp.ServerTimeoutError:
            raise UpstreamError("timeout", f"body stalled for more than {self._timeout}s") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError("protocol", f"body cut short: {exc!r}") from exc

    async def aclose(self) -> None:
        """Give the connection back to the pool if the body was read to its end, else drop it."""
        if self._complete:
            self._response.release()
        else:
            self._response.close()
