"""Streamed responses through aiohttp: whatever has arrived is handed over as one chunk,
on the event loop's own thread (see gatewayd.upstream.http for why)."""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aiohttp

from gatewayd.upstream.errors import UpstreamError

# aiohttp adds these unless told not to; a proxy sends only what the pipeline chose.
_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")


class StreamTransport:
    def __init__(self, max_connections: int, connect_timeout: float) -> None:
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
        # Proxies from the environment, read once like the whole-response transport does:
        # aiohttp's own trust_env re-reads the environment on every request.
        self._proxies = urllib.request.getproxies_environment()
        self._proxy_for: dict[tuple[str, str], str | None] = {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, method: str, url: str, headers: list[tuple[str, str]], body: bytes, timeout: float):
        proxy = self._proxy(url) if self._proxies else None
        try:
            response = await self._session.request(
                method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=self._timeout(timeout),
                proxy=proxy,
            )
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise UpstreamError("unreachable", f"{url}: {exc}") from exc
        except aiohttp.ServerTimeoutError:
            raise UpstreamError("timeout", f"no response headers from {url} within {timeout}s") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError("protocol", f"{url}: {exc!r}") from exc
        return StreamedResponse(response, timeout)

    def _proxy(self, url: str) -> str | None:
        """HTTP(S)_PROXY for the URL's scheme unless NO_PROXY covers its host; kept per host."""
        parts = urllib.parse.urlsplit(url)
        key = (parts.scheme, parts.netloc)
        if key not in self._proxy_for:
            bypass = urllib.request.proxy_bypass_environment(parts.hostname or "", self._proxies)
            self._proxy_for[key] = None if bypass else self._proxies.get(parts.scheme)
        return self._proxy_for[key]

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        """Per-read timeout (headers, then every body read), no total: streams run long."""
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout, sock_read=seconds)
            self._timeouts[seconds] = timeout
        return timeout


class StreamedResponse:
    __slots__ = ("status", "headers", "_response", "_timeout", "_complete")

    def __init__(self, response: aiohttp.ClientResponse, timeout: float) -> None:
        self.status: int = response.status
        self.headers: list[tuple[bytes, bytes]] = [(name.lower(), value) for name, value in response.raw_headers]
        self._response = response
        self._timeout = timeout
        self._complete = False

    async def read(self) -> bytes:
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
        try:
            yield
        except aiohttp.ServerTimeoutError:
            raise UpstreamError("timeout", f"body stalled for more than {self._timeout}s") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError("protocol", f"body cut short: {exc!r}") from exc

    async def aclose(self) -> None:
        if self._complete:
            self._response.release()
        else:
            self._response.close()
