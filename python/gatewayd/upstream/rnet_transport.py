"""Whole responses through rnet (reqwest/hyper in Rust): the request and the body read each
cost one crossing, and the HTTP work runs off the event loop (see gatewayd.upstream.http).

Timeouts are the event loop's (rnet takes whole seconds only); cancelling an rnet call
drops its request and closes the connection, which tests/test_upstream_client.py checks.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator

import rnet
from rnet import exceptions as rx

from gatewayd.upstream.errors import UpstreamError

_REASON = re.compile(r'message: "([^"]+)"|hyper::Error\((\w+)')


class WholeTransport:
    def __init__(self, max_connections: int, connect_timeout: float) -> None:
        self._max_connections = max_connections
        self._connect_timeout = max(1, math.ceil(connect_timeout))
        self._client: rnet.Client | None = None

    async def start(self) -> None:
        self._client = rnet.Client(
            pool_max_size=self._max_connections,
            pool_max_idle_per_host=self._max_connections,
            connect_timeout=self._connect_timeout,
            allow_redirects=False,
            cookie_store=False,
            http1_only=True,
            tcp_nodelay=True,
            gzip=False,
            brotli=False,
            deflate=False,
            zstd=False,
        )

    async def close(self) -> None:
        self._client = None  # rnet's pool closes its connections when dropped

    async def send(self, method: str, url: str, headers: list[tuple[str, str]], body: bytes, timeout: float):
        try:
            async with asyncio.timeout(timeout):
                response = await self._client.request(
                    getattr(rnet.Method, method), url, headers=dict(headers), body=body
                )
        except TimeoutError:
            raise UpstreamError("timeout", f"no response headers from {url} within {timeout}s") from None
        except rx.ConnectionError as exc:
            raise UpstreamError("unreachable", f"{url}: cannot connect ({_reason(exc)})") from exc
        except (rx.TimeoutError, rx.RequestError, rx.BodyError, rx.ConnectionResetError, rx.DecodingError) as exc:
            raise UpstreamError("protocol", f"{url}: {_reason(exc)}") from exc
        return WholeResponse(response, timeout)


class WholeResponse:
    __slots__ = ("status", "headers", "_response", "_timeout", "_complete")

    def __init__(self, response: rnet.Response, timeout: float) -> None:
        self.status: int = response.status
        self.headers: list[tuple[str, str]] = [
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in response.headers.items()
        ]
        self._response = response
        self._timeout = timeout
        self._complete = False

    async def read(self) -> bytes:
        try:
            async with asyncio.timeout(self._timeout):
                body = await self._response.bytes()
        except TimeoutError:
            raise UpstreamError("timeout", f"body stalled for more than {self._timeout}s") from None
        except (rx.BodyError, rx.DecodingError, rx.RequestError, rx.ConnectionResetError) as exc:
            raise UpstreamError("protocol", f"body cut short: {_reason(exc)}") from exc
        self._complete = True
        return body

    async def chunks(self) -> AsyncIterator[bytes]:
        """A whole response read as one chunk: streams belong on the stream transport."""
        yield await self.read()

    async def aclose(self) -> None:
        if not self._complete:
            await self._response.close()


def _reason(exc: Exception) -> str:
    """The operating system's or hyper's words from rnet's debug-formatted error."""
    match = _REASON.search(str(exc))
    if match:
        return match.group(1) or match.group(2)
    return type(exc).__name__
