"""Hand-written providers for the upstream client's tests: asyncio servers that answer
exactly as a test needs, down to the bytes."""

from __future__ import annotations

import asyncio
import contextlib

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


def http_provider(responses: list[bytes], connections: list[int]):
    """A provider that answers the requests on each connection with `responses`, in turn
    (one per request); `connections` gets one entry per connection it accepts."""

    async def answer(reader, writer):
        connections.append(len(connections))
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lines = head.lower().split(b"\r\n")
                length = next((int(line[15:]) for line in lines if line.startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                response = responses.pop(0)
                writer.write(response)
                await writer.drain()
                if b"connection: close" in response or not responses:
                    break
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    return answer
