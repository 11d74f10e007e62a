"""One HTTP/1.1 connection to a provider, driven by the event loop itself.

The parsing is httptools (llhttp, the parser uvicorn and aiohttp are built on); this
module is the part that decides what a gateway needs from it: one request at a time,
the response handed over as it arrives (a whole body, or whatever has come in since the
last read), reading paused while a slow consumer has more than ``HIGH_WATER`` bytes
waiting, and a connection reused only when its last response ended cleanly.
"""

from __future__ import annotations

import asyncio
from typing import cast

import httptools

from gatewayd.upstream.errors import ErrorKind, UpstreamError

HIGH_WATER = 256 * 1024  # bytes of body buffered before the socket stops being read
MAX_HEADER_BYTES = 64 * 1024  # a response head larger than this is refused, not buffered


class H1Connection(asyncio.Protocol):
    """The transport's protocol; ``exchange`` starts a request, ``wait`` blocks until the
    response has moved on (headers in, body bytes in, ended, or failed)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, key: tuple, origin: str) -> None:
        self.loop = loop
        self.key = key  # the pool's: (scheme, host, port)
        self.origin = origin  # for messages: scheme://host[:port]
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.error: UpstreamError | None = None
        self.received = False  # any byte of this response yet
        self._body: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._framed = False  # content-length or chunked: else the body ends when the connection does
        self._head_only = False

    # --- driving a request --------------------------------------------------------------

    def exchange(self, request: bytes, head_only: bool = False) -> None:
        """Writes one whole request; the response state starts afresh."""
        self._reset()
        self._head_only = head_only  # a HEAD response has headers only, whatever they announce
        # The pool hands over only a connection it has just dialled or checked is open.
        assert self.transport is not None
        self.transport.write(request)

    def upgraded(self, transport: asyncio.Transport) -> None:
        """After a CONNECT tunnel turned into TLS: the same protocol on the new transport."""
        self.transport = transport
        self._parser = httptools.HttpResponseParser(self)

    async def wait(self, deadline: float | None) -> None:
        """Returns once the response has progressed; raises its error, or ``timeout`` when
        ``deadline`` (loop time) passes first."""
        if self.error is not None:
            raise self.error
        waiter = self._waiter = self.loop.create_future()
        timer = self.loop.call_at(deadline, _expire, waiter) if deadline is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        if self.error is not None:
            raise self.error

    def take_body(self) -> bytes:
        """Everything that has arrived and not been taken yet (b"" when nothing has)."""
        body = self._body
        if not body:
            return b""
        chunk = body[0] if len(body) == 1 else b"".join(body)
        self._body = []
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return chunk

    def has_body(self) -> bool:
        return bool(self._body)

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # BaseProtocol types it for every kind of protocol; a stream connection's is a Transport.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail("protocol", "the provider switched protocols")
        except httptools.HttpParserError as exc:
            self._fail("protocol", f"malformed response ({exc})")
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.complete or self.error is not None:
            return self._wake()
        if self.headers_done and not self._framed:
            self.complete = True  # a body delimited by the end of the connection
        else:
            self._fail("protocol", f"{self.origin} closed the connection before the response ended")
        self._wake()

    # --- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # more than the framing announced: where anything ends is unknown now
            self._fail("protocol", f"{self.origin} sent more than the response it announced")
            raise ValueError("bytes after the response")  # stops the parser

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            self._fail("protocol", f"{self.origin} sent response headers over {MAX_HEADER_BYTES} bytes")
            raise ValueError("headers too large")  # stops the parser
        name = name.lower()
        if name == b"content-length" or name == b"transfer-encoding":
            self._framed = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim response (100 Continue, 103 Early Hints): not ours
            self.headers = []
            self._framed = False
            return
        self.status = status
        self.headers_done = True
        if self._head_only:
            self._finish()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.headers_done and not self.complete:
            self._finish()

    # --- internals ----------------------------------------------------------------------

    def _finish(self) -> None:
        self.complete = True
        self.keep_alive = self._parser.should_keep_alive() and not self._head_only

    def _fail(self, kind: ErrorKind, message: str) -> None:
        if self.error is None:
            self.error = UpstreamError(kind, message)
        if self.transport is not None:
            self.transport.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
