"""Hand-written providers: asyncio servers that answer exactly as a test needs, down to
the bytes, for the upstream client in-process (``raw_provider``) or for a gateway running
as another process (``provider_thread``)."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from gatewayd.upstream import UpstreamClient


@contextlib.asynccontextmanager
async def raw_provider(handler):
    """A hand-written provider (asyncio streams `handler`) and a started client; yields
    (url, client) and closes both."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    client = UpstreamClient()
    await client.start()
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/", client
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


@contextlib.contextmanager
def provider_thread(handler):
    """A hand-written provider (asyncio streams `handler`) on an event loop of its own, in a
    thread of this process; yields its base URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(asyncio.start_server(handler, "127.0.0.1", 0), loop).result(10)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def answering(*parts: bytes, pause: float = 0.05):
    """A provider that answers every request with `parts`, byte for byte, `pause` seconds
    apart (so they arrive as separate reads), then hangs up: the way to send framings and
    bodies no real server library would."""

    async def answer(reader, writer):
        try:
            await reader.readexactly(_body_length(await reader.readuntil(b"\r\n\r\n")))
            for n, part in enumerate(parts):
                if n:
                    await asyncio.sleep(pause)
                writer.write(part)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    return answer


def http_provider(responses: list[bytes], connections: list[int]):
    """A provider that answers the requests on each connection with `responses`, in turn
    (one per request); `connections` gets one entry per connection it accepts."""

    async def answer(reader, writer):
        connections.append(len(connections))
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                await reader.readexactly(_body_length(head))
                response = responses.pop(0)
                writer.write(response)
                await writer.drain()
                if b"connection: close" in response or not responses:
                    break
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    return answer


def _body_length(head: bytes) -> int:
    """A request's content-length (the gateway's client always sends one)."""
    lines = head.lower().split(b"\r\n")
    return next((int(line[15:]) for line in lines if line.startswith(b"content-length:")), 0)
