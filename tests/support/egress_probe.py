"""Run as a script by tests/test_upstream_egress.py, in a process of its own because the
environment (SSL_CERT_FILE, HTTP_PROXY, NO_PROXY) is read once per process. Sends one
request through each of UpstreamClient's transports and prints the outcome as JSON:

    egress_probe.py tls CERT KEY   # an HTTPS provider with that certificate
    egress_probe.py proxy          # a proxy in HTTP_PROXY, and a provider in NO_PROXY
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys

from gatewayd.upstream import UpstreamClient, UpstreamError

TRANSPORTS = (("whole", False), ("stream", True))


def answering(log: list[str]):
    """A server that notes each request line and answers `{}`, once per connection."""

    async def answer(reader, writer):
        log.append((await reader.readline()).decode().strip())
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        await reader.readexactly(length)  # unread bytes at close would reset the connection
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-type: application/json\r\n")
        writer.write(b"content-length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    return answer


async def send_each(urls: list[str]) -> dict:
    client = UpstreamClient()
    await client.start()
    results = {}
    try:
        for name, stream in TRANSPORTS:
            results[name] = []
            for url in urls:
                try:
                    resp = await client.send("POST", url, [], b"{}", timeout=5, stream=stream)
                    results[name].append({"status": resp.status, "body": (await resp.read()).decode()})
                    await resp.aclose()
                except UpstreamError as exc:
                    results[name].append({"error": exc.kind, "message": str(exc)})
    finally:
        await client.close()
    return results


async def tls(cert: str, key: str) -> dict:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = await asyncio.start_server(answering([]), "127.0.0.1", 0, ssl=context)
    return await send_each([f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/"])


async def proxy() -> dict:
    proxied, direct = [], []
    relay = await asyncio.start_server(answering(proxied), "127.0.0.1", 0)
    provider = await asyncio.start_server(answering(direct), "127.0.0.1", 0)
    os.environ["HTTP_PROXY"] = f"http://127.0.0.1:{relay.sockets[0].getsockname()[1]}"
    os.environ["NO_PROXY"] = "127.0.0.1"
    urls = ["http://provider.invalid:9/v1/chat", f"http://127.0.0.1:{provider.sockets[0].getsockname()[1]}/v1/chat"]
    results = await send_each(urls)
    return {"results": results, "proxied": proxied, "direct": direct}


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    print(json.dumps(asyncio.run({"tls": tls, "proxy": proxy}[mode](*args))))
