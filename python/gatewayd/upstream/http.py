"""The gateway's HTTP client towards providers: a pooled pyreqwest client per worker.

pyreqwest (reqwest/hyper under the hood) won bench/upstream_clients.py: about 1.5x the
throughput of the next candidate through a granian pass-through, at equal latency. Only
this module knows it is pyreqwest: the pipeline sees ``UpstreamClient``/``UpstreamResponse``
and one exception type, so the transport can be swapped.

Every response is streamed. Bodies and their ``content-encoding`` pass through untouched
(no automatic decompression, no redirects): the gateway relays what the provider said.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Literal

from pyreqwest.client import Client, ClientBuilder
from pyreqwest.exceptions import ConnectError, ConnectTimeoutError, RequestError
from pyreqwest.request import StreamRequest
from pyreqwest.response import Response

ErrorKind = Literal["unreachable", "timeout", "protocol"]

# Framing and routing headers are the transport's to set, never the caller's.
_TRANSPORT_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive"})


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
        self._client: Client | None = None

    async def start(self) -> None:
        self._client = (
            ClientBuilder()
            .max_connections(self._max_connections)
            .connect_timeout(timedelta(seconds=self._connect_timeout))
            .follow_redirects(False)
            .referer(False)
            .gzip(False)
            .brotli(False)
            .zstd(False)
            .deflate(False)
            .build()
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def send(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes, timeout: float
    ) -> UpstreamResponse:
        """Send the request and return once the response headers are in.

        ``timeout`` bounds the wait for the headers, then each wait for the next body bytes.
        The caller must ``aclose`` the response (reading it to the end does not suffice).
        """
        if self._client is None:
            raise RuntimeError("UpstreamClient.send() before start()")
        request = (
            self._client.request(method, url)
            .headers([(k, v) for k, v in headers if k.lower() not in _TRANSPORT_HEADERS])
            .body_bytes(body)
            # Read-ahead 0: hand the response over at its headers. The default (64 KiB)
            # would hold back a short SSE stream until it had ended.
            .streamed_read_buffer_limit(0)
            .build_streamed()
        )
        try:
            async with asyncio.timeout(timeout):
                response = await request.__aenter__()
        except TimeoutError:
            raise UpstreamError("timeout", f"no response headers from {url} within {timeout}s") from None
        except (ConnectError, ConnectTimeoutError) as exc:
            raise UpstreamError("unreachable", f"{url}: {exc.message}") from exc
        except RequestError as exc:
            raise UpstreamError("protocol", f"{url}: {exc.message}") from exc
        return UpstreamResponse(request, response, timeout)


class UpstreamResponse:
    """A response whose body has not been read yet; read it once, by ``read`` or ``chunks``."""

    __slots__ = ("status", "headers", "_request", "_response", "_timeout", "_closed")

    def __init__(self, request: StreamRequest, response: Response, timeout: float) -> None:
        self.status: int = response.status
        self.headers: list[tuple[str, str]] = list(response.headers.items())  # names arrive lowercase
        self._request = request
        self._response = response
        self._timeout = timeout
        self._closed = False

    async def read(self) -> bytes:
        """The whole body."""
        return b"".join([chunk async for chunk in self.chunks()])

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk as it arrives off the wire."""
        reader = self._response.body_reader
        while True:
            try:
                async with asyncio.timeout(self._timeout):
                    chunk = await reader.read_chunk()
            except TimeoutError:
                raise UpstreamError("timeout", f"body stalled for more than {self._timeout}s") from None
            except RequestError as exc:
                raise UpstreamError("protocol", f"body cut short: {exc.message}") from exc
            if chunk is None:
                return
            yield bytes(chunk)

    async def aclose(self) -> None:
        """Release the connection (back to the pool if the body was read to its end)."""
        if not self._closed:
            self._closed = True
            await self._request.__aexit__(None, None, None)
