"""granian's own interface, RSGI, as a thin adapter over the one pipeline.

The application is written once, against ASGI's `receive` and `send`; here an RSGI
request gets the same three things, built over its protocol object: a scope with the
headers as ASGI gives them (lowercase byte pairs), a `receive` that hands out the body as
it arrives and then waits for the client to go, and a `send` that answers in one
`response_bytes` call when the answer is whole and opens a stream only for SSE. What RSGI
saves is granian's side of ASGI: no message dicts built in Rust for every event, no
per-message future. Selected with `[server] interface = "rsgi"`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from granian.rsgi import HTTPProtocol, ProtocolClosed

Handler = Callable[[dict, Callable, Callable], Awaitable[None]]
_LAST = {"type": "http.request", "body": b"", "more_body": False}
_GONE = {"type": "http.disconnect"}


async def serve(handler: Handler, scope, protocol) -> None:
    """Serves one RSGI request through `handler` (the application's ASGI-shaped HTTP entry)."""
    path = scope.path
    # The path as sent: granian's RSGI scope does not decode it, so an encoded spelling
    # still names no route (see gatewayd.server.app.LLM_ROUTES).
    asgi_scope = {
        "type": "http",
        "method": scope.method,
        "path": path,
        "raw_path": path.encode("latin-1"),
        "query_string": scope.query_string.encode("latin-1"),
        "headers": [(name.encode("latin-1"), value.encode("latin-1")) for name, value in scope.headers.items()],
    }
    await handler(asgi_scope, _Receive(protocol), _Send(protocol))


class _Receive:
    """ASGI's `receive` over an RSGI protocol: the body chunk by chunk (so the body limit
    and the stall deadlines apply as the body arrives), then `http.disconnect` once the
    client has gone."""

    __slots__ = ("_protocol", "_chunks", "_ended")

    def __init__(self, protocol: HTTPProtocol) -> None:
        self._protocol = protocol
        self._chunks: AsyncIterator[bytes] | None = None
        self._ended = False

    def disconnected(self) -> Awaitable[None]:
        """granian's own future for the client's going, apart from the body: the client
        watch waits on it without reading what is left of the body first."""
        return self._protocol.client_disconnect()

    async def __call__(self) -> dict:
        if self._ended:
            await self._protocol.client_disconnect()
            return _GONE
        if self._chunks is None:
            self._chunks = self._protocol.__aiter__()
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            self._ended = True
            return _LAST
        return {"type": "http.request", "body": chunk, "more_body": True}


class _Send:
    """ASGI's `send` over an RSGI protocol. A client that has gone is not an error here,
    as with ASGI: the pipeline learns it from `receive` (gatewayd.server.asgi.ClientWatch)."""

    __slots__ = ("_protocol", "_status", "_headers", "_stream")

    def __init__(self, protocol: HTTPProtocol) -> None:
        self._protocol = protocol
        self._status = 500
        self._headers: list[tuple[str, str]] = []
        self._stream: Any = None  # granian's stream transport, once a stream is open

    async def __call__(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self._status = message["status"]
            self._headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in message["headers"]]
            return
        body = message.get("body", b"")
        try:
            if self._stream is None:
                if not message.get("more_body"):
                    return self._protocol.response_bytes(self._status, self._headers, body)
                self._stream = self._protocol.response_stream(self._status, self._headers)
            if body:
                await self._stream.send_bytes(body)
        except ProtocolClosed:
            pass
