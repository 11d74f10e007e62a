"""Run as a script by tests/test_upstream_tls.py, so each run reads SSL_CERT_FILE afresh:
serves HTTPS with the given certificate and key, sends one request through each of
UpstreamClient's transports, and prints {"whole": ..., "stream": ...} (status or error)."""

from __future__ import annotations

import asyncio
import json
import ssl
import sys

from gatewayd.upstream import UpstreamClient, UpstreamError


async def main(cert: str, key: str) -> dict:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def answer(reader, writer):
        await reader.read(65536)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    client = UpstreamClient()
    await client.start()
    results = {}
    for name, stream in (("whole", False), ("stream", True)):
        try:
            resp = await client.send("POST", url, [], b"{}", timeout=5, stream=stream)
            results[name] = {"status": resp.status, "body": (await resp.read()).decode()}
            await resp.aclose()
        except UpstreamError as exc:
            results[name] = {"error": exc.kind, "message": str(exc)}
    await client.close()
    server.close()
    return results


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))))
