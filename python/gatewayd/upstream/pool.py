"""Pooled HTTP/1.1 connections to providers, on the event loop's own thread.

Keep-alive connections are kept per origin, newest first, and reused only after a
response that ended cleanly; ``max_connections`` bounds each origin's requests in flight
(the rest wait for a slot, within their timeout). A request is never sent twice but in
one case: a connection idle for a while that the provider closes as the request goes
out, without a byte of answer (its keep-alive timeout firing just then), is retried once
on a new connection.

TLS trusts what Python's ``ssl`` trusts (the system's CA bundle, or ``SSL_CERT_FILE``).
``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` are read once, when the pool starts: plain
HTTP goes to the proxy in absolute form, HTTPS through a ``CONNECT`` tunnel. Any
failure, timeout or cancellation closes the connection it happened on, so a caller that
gives up also stops the provider's work.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import ssl
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import AsyncIterator, Sequence

from gatewayd.upstream.connection import H1Connection
from gatewayd.upstream.errors import UpstreamError

IDLE_S = 30.0  # a kept-alive connection unused this long is closed rather than reused
# A reused connection that closes without a byte of answer is retried on a new one only if
# it had been idle this long: a provider's idle timeout can have closed it just then.
STALE_AFTER_S = 1.0
DEFAULT_PORTS = {"http": 80, "https": 443}
# Framing and routing headers are the client's to set, never the caller's.
TRANSPORT_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive"})


class Origin:
    """Where one URL's requests go: the connection to open and the request line to send."""

    __slots__ = ("key", "scheme", "host", "port", "host_header", "target", "proxy", "proxy_auth")

    def __init__(self, url: str, proxies: dict[str, str]) -> None:
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise UpstreamError("unreachable", f"{url}: not a valid URL ({exc})") from None
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise UpstreamError("unreachable", f"{url}: not an http(s) URL")
        self.scheme, self.host = parts.scheme, parts.hostname
        self.port = port or DEFAULT_PORTS[self.scheme]
        default = self.port == DEFAULT_PORTS[self.scheme]
        self.host_header = (parts.netloc.rpartition("@")[2] if not default else _bracketed(self.host)).encode()
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        proxy = None
        # Undocumented (NO_PROXY matching on a given mapping), so typeshed leaves it out.
        if proxies and not urllib.request.proxy_bypass_environment(self.host, proxies):  # type: ignore[attr-defined]
            proxy = proxies.get(self.scheme)
        if proxy and "://" not in proxy:  # HTTP_PROXY=host:port, read as http://host:port (as curl does)
            proxy = "http://" + proxy
        self.proxy = urllib.parse.urlsplit(proxy) if proxy else None
        self.proxy_auth = _basic_auth(self.proxy) if self.proxy else None
        absolute = self.proxy is not None and self.scheme == "http"  # proxied plain HTTP names the whole URL
        self.target = (f"{self.scheme}://{parts.netloc.rpartition('@')[2]}{path}" if absolute else path).encode()
        self.key = (self.scheme, self.host, self.port)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host_header.decode()}"


class ConnectionPool:
    def __init__(self, max_connections: int, connect_timeout: float, limits: dict[str, int]) -> None:
        self._max_connections = max_connections
        self._limits: dict[tuple, int] = {}  # origin key -> requests in flight
        for url, limit in limits.items():
            key = Origin(url, {}).key
            self._limits[key] = max(self._limits.get(key, 0), limit)
        self._connect_timeout = connect_timeout
        self._idle: dict[tuple, deque[H1Connection]] = {}
        self._slots: dict[tuple, asyncio.Semaphore] = {}  # per origin
        self._tls: ssl.SSLContext | None = None
        self._proxies: dict[str, str] = {}

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._tls = ssl.create_default_context()
        self._tls.set_alpn_protocols(["http/1.1"])
        self._proxies = urllib.request.getproxies_environment()
        self._origin = functools.lru_cache(maxsize=256)(lambda url: Origin(url, self._proxies))

    async def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

    async def send(
        self, method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes, timeout: float, stream: bool
    ):
        """Whole responses are read to their end under one deadline; a stream returns at
        its headers, and each later wait for body bytes gets ``timeout`` anew."""
        origin = self._origin(url)
        deadline = self.loop.time() + timeout
        request = _encode(method, origin, headers, body)
        await self._take_slot(origin, deadline, timeout)
        head_only = method == "HEAD"
        conn = None
        try:
            conn = self._reuse(origin.key)
            # Only a connection idle this long may have been closed by the provider's own
            # idle timeout (e.g. uvicorn's 5 s) just as the request went out.
            may_be_stale = conn is not None and self.loop.time() - conn.idle_since >= STALE_AFTER_S
            if conn is None:
                conn = await self._connect(origin, deadline, timeout)
            try:
                await _head(conn, request, head_only, deadline)
            except UpstreamError:
                if not may_be_stale or conn.received:
                    raise
                # Not a byte came back: the request goes once more on a new connection.
                conn = await self._connect(origin, deadline, timeout)
                await _head(conn, request, head_only, deadline)
            if stream:
                return StreamedResponse(self, conn, timeout)
            while not conn.complete:
                await conn.wait(deadline)
            payload = conn.take_body()
        except TimeoutError:
            self.discard(origin.key, conn)
            raise UpstreamError("timeout", f"no complete response from {origin} within {timeout}s") from None
        except BaseException:
            self.discard(origin.key, conn)
            raise
        self.release(conn)
        return WholeResponse(conn.status, conn.headers, payload)

    async def _take_slot(self, origin: Origin, deadline: float, timeout: float) -> None:
        """A place among the origin's ``max_connections`` requests in flight (a provider that
        stalls holds up its own requests, not other providers'); the wait for one is part
        of the request's time."""
        slots = self._slots.get(origin.key)
        if slots is None:
            slots = self._slots[origin.key] = asyncio.Semaphore(self._limit(origin.key))
        if not slots.locked():
            await slots.acquire()  # at once: no timer needed
            return
        try:
            async with asyncio.timeout_at(deadline):
                await slots.acquire()
        except TimeoutError:
            raise UpstreamError("timeout", f"no free connection to {origin} within {timeout}s") from None

    def _limit(self, key: tuple) -> int:
        """The origin's requests in flight, and kept-alive connections."""
        return self._limits.get(key, self._max_connections)

    def _reuse(self, key: tuple) -> H1Connection | None:
        """The most recently used live connection; the stale ones go."""
        idle = self._idle.get(key)
        if idle:
            _sweep(idle, self.loop.time())
        while idle:
            conn = idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    async def _connect(self, origin: Origin, deadline: float, timeout: float) -> H1Connection:
        """A new connection (through the proxy when there is one), TLS included; the
        connect timeout and the request's deadline both bound it."""
        connect_by = min(deadline, self.loop.time() + self._connect_timeout)
        try:
            async with asyncio.timeout_at(connect_by):
                return await self._open(origin)
        except TimeoutError:
            if connect_by == deadline:
                raise UpstreamError("timeout", f"no connection to {origin} within {timeout}s") from None
            raise UpstreamError("unreachable", f"{origin}: connect timed out after {self._connect_timeout}s") from None
        except ssl.SSLCertVerificationError as exc:
            raise UpstreamError("unreachable", f"{origin}: {exc.verify_message}") from None
        except OSError as exc:
            raise UpstreamError("unreachable", f"{origin}: cannot connect ({exc.strerror or exc})") from None

    async def _open(self, origin: Origin) -> H1Connection:
        proxy = origin.proxy
        if proxy is None:
            return await self._dial(origin, origin.scheme, origin.host, origin.port)
        if not proxy.hostname:  # create_connection would dial localhost instead
            raise UpstreamError("unreachable", f"{origin}: the proxy URL {proxy.geturl()!r} names no host")
        port = proxy.port or DEFAULT_PORTS.get(proxy.scheme, 80)
        conn = await self._dial(origin, proxy.scheme, proxy.hostname, port)
        if origin.scheme == "http":
            return conn
        try:  # HTTPS through the proxy: a CONNECT tunnel, then TLS with the provider inside it
            authority = f"{_bracketed(origin.host)}:{origin.port}".encode()
            auth = b"proxy-authorization: %s\r\n" % origin.proxy_auth if origin.proxy_auth else b""
            conn.exchange(b"CONNECT %s HTTP/1.1\r\nhost: %s\r\n%s\r\n" % (authority, authority, auth), head_only=True)
            while not conn.headers_done:
                await conn.wait(None)
            if conn.status != 200:
                raise UpstreamError("unreachable", f"{origin}: the proxy refused the tunnel ({conn.status})")
            # start() made the context; the tunnel's connection has just answered (a proxy closing it
            # right after its 200 would fail here, as start_tls failed on None before).
            assert conn.transport is not None and self._tls is not None
            tls = await self.loop.start_tls(conn.transport, conn, self._tls, server_hostname=origin.host)
        except BaseException:
            conn.close()
            raise
        assert tls is not None  # start_tls returns the new transport or raises
        conn.upgraded(tls)
        return conn

    async def _dial(self, origin: Origin, scheme: str, host: str, port: int) -> H1Connection:
        """One TCP connection (TLS for https) to the provider or its proxy."""
        make = functools.partial(H1Connection, self.loop, origin.key, str(origin))
        tls = self._tls if scheme == "https" else None
        _, conn = await self.loop.create_connection(make, host, port, ssl=tls, server_hostname=host if tls else None)
        return conn

    def release(self, conn: H1Connection) -> None:
        """The request is over: its slot goes back, its connection to the pool if reusable."""
        self._slots[conn.key].release()
        if conn.reusable():
            conn.idle_since = self.loop.time()
            idle = self._idle.setdefault(conn.key, deque())
            if len(idle) < self._limit(conn.key):
                idle.append(conn)
                _sweep(idle, conn.idle_since)
                return
        conn.close()

    def discard(self, key: tuple, conn: H1Connection | None) -> None:
        self._slots[key].release()
        if conn is not None:
            conn.close()


class WholeResponse:
    """Already read to its end: the connection is back in the pool."""

    __slots__ = ("status", "headers", "_body")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self._body = body

    async def read(self) -> bytes:
        return self._body

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self._body

    async def aclose(self) -> None:
        pass


class StreamedResponse:
    """At its headers; the body is read as it arrives, each wait bounded by the timeout."""

    __slots__ = ("status", "headers", "_pool", "_conn", "_timeout", "_closed")

    def __init__(self, pool: ConnectionPool, conn: H1Connection, timeout: float) -> None:
        self.status = conn.status
        self.headers = conn.headers
        self._pool, self._conn, self._timeout = pool, conn, timeout
        self._closed = False

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def chunks(self) -> AsyncIterator[bytes]:
        """Whatever has come in since the last chunk, as one chunk."""
        conn = self._conn
        while True:
            if conn.has_body():
                yield conn.take_body()
            elif conn.complete:
                return
            else:
                try:
                    await conn.wait(conn.loop.time() + self._timeout)
                except TimeoutError:
                    raise UpstreamError("timeout", f"body stalled for more than {self._timeout}s") from None
                except UpstreamError as exc:
                    raise UpstreamError("protocol", f"body cut short: {exc}") from None

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._conn.complete and not self._conn.has_body():
            self._pool.release(self._conn)
        else:
            self._pool.discard(self._conn.key, self._conn)


async def _head(conn: H1Connection, request: bytes, head_only: bool, deadline: float) -> None:
    """Sends the request and waits for the response's headers."""
    conn.exchange(request, head_only)
    while not conn.headers_done:
        await conn.wait(deadline)


def _sweep(idle: deque[H1Connection], now: float) -> None:
    """Closes the connections idle for IDLE_S or more: the oldest sit at the left, so a
    burst's extra connections are let go once traffic no longer needs them."""
    while idle and now - idle[0].idle_since >= IDLE_S:
        idle.popleft().close()


# Header lines as encoded, by (name, value): the same headers go out on every request (a
# provider's key and version, the client's forwarded ones), checked and encoded once.
_LINES: dict[tuple[str, str], bytes] = {}
_MAX_LINES = 4096


def _encode(method: str, origin: Origin, headers: Sequence[tuple[str, str]], body: bytes) -> bytes:
    """The request head and body as one write."""
    start = b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (method.encode(), origin.target, origin.host_header)
    lines = [start, b"content-length: %d\r\n" % len(body)]
    if origin.proxy_auth and origin.scheme == "http":
        lines.append(b"proxy-authorization: %s\r\n" % origin.proxy_auth)
    for header in headers:
        line = _LINES.get(header)
        if line is None:
            line = _header_line(*header)
            if len(_LINES) >= _MAX_LINES:
                _LINES.clear()
            _LINES[header] = line
        lines.append(line)
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


def _header_line(name: str, value: str) -> bytes:
    """`name: value` and its line end; nothing for a header the client itself sets."""
    if name.lower() in TRANSPORT_HEADERS:
        return b""
    if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
        raise UpstreamError("protocol", f"header {name!r} has a line break in it")
    return f"{name}: {value}\r\n".encode("latin-1")


def _basic_auth(proxy: urllib.parse.SplitResult) -> bytes | None:
    if proxy.username is None:
        return None
    user = urllib.parse.unquote(proxy.username)
    password = urllib.parse.unquote(proxy.password or "")
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
