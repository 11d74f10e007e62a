"""Whole responses through rnet (reqwest/hyper in Rust): the request and the body read each
cost one crossing, and the HTTP work runs off the event loop (see gatewayd.upstream.http).

Timeouts of whole seconds are rnet's own, any other the event loop's; cancelling an rnet
call drops its request and closes the connection, which tests/test_upstream_client.py checks.
TLS trusts what Python's `ssl` (and so the stream transport) trusts: the system's CA bundle,
or the file named by ``SSL_CERT_FILE``; rnet's own built-in roots would otherwise make a
private CA work for streams and fail for whole responses. Proxies come from
``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY``, read when the client starts, for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import rnet
from rnet import exceptions as rx

from gatewayd.upstream.errors import UpstreamError

_METHODS = {name: getattr(rnet.Method, name) for name in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")}
_REASON = re.compile(
    r'message: "([^"]+)"'  # the operating system's words (connection refused, ...)
    r'|X509VerifyError \{ code: \d+, error: "([^"]+)"'  # the certificate check's
    r"|hyper::Error\((\w+)"  # hyper's kind of failure (IncompleteMessage, Parse, ...)
)


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
            verify=_trusted_roots(),
        )

    async def close(self) -> None:
        self._client = None  # rnet's pool closes its connections when dropped

    async def send(self, method: str, url: str, headers: list[tuple[str, str]], body: bytes, timeout: float):
        """The whole exchange, body included, under one deadline: a whole response is read
        as soon as its headers are in, so one wait and one timer serve both. rnet's own
        timer takes whole seconds; any other timeout is the event loop's, which costs
        about 5 us more per request."""
        native = timeout >= 1 and float(timeout).is_integer()
        deadline = contextlib.nullcontext() if native else asyncio.timeout(timeout)
        options = {"timeout": int(timeout)} if native else {}
        try:
            async with deadline:
                response = await self._client.request(
                    _METHODS[method], url, headers=dict(headers), body=body, **options
                )
                try:
                    payload = await response.bytes()
                except BaseException:
                    await response.close()
                    raise
        except (TimeoutError, rx.TimeoutError):
            raise UpstreamError("timeout", f"no complete response from {url} within {timeout}s") from None
        except rx.ConnectionError as exc:
            raise UpstreamError("unreachable", f"{url}: cannot connect ({_reason(exc)})") from exc
        except (rx.RequestError, rx.BodyError, rx.ConnectionResetError, rx.DecodingError) as exc:
            if "TimedOut" in str(exc):  # rnet's timer went off while the body was coming in
                raise UpstreamError("timeout", f"no complete response from {url} within {timeout}s") from None
            raise UpstreamError("protocol", f"{url}: {_reason(exc)}") from exc
        return WholeResponse(response.status, list(response.headers.items()), payload)


class WholeResponse:
    """Already read to its end: the connection is back in the pool."""

    __slots__ = ("status", "headers", "_body")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers  # hyper's names are lower-case already
        self._body = body

    async def read(self) -> bytes:
        return self._body

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self._body

    async def aclose(self) -> None:
        pass


def _trusted_roots() -> Path | bool:
    """The CA bundle Python's `ssl` loads by default; True (rnet's roots) when there is none."""
    paths = ssl.get_default_verify_paths()
    for candidate in (os.environ.get(paths.openssl_cafile_env), paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            return Path(candidate)
    return True


def _reason(exc: Exception) -> str:
    """The operating system's, TLS's or hyper's words from rnet's debug-formatted error."""
    match = _REASON.search(str(exc))
    if match:
        return next(group for group in match.groups() if group)
    return type(exc).__name__
