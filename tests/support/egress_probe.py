"""Run as a script by tests/test_upstream_egress.py, in a process of its own because the
environment (SSL_CERT_FILE, HTTP_PROXY, NO_PROXY) is read once per process. Sends one
request through each of UpstreamClient's transports and prints the outcome as JSON:

    egress_probe.py tls CERT KEY     # an HTTPS provider with that certificate
    egress_probe.py proxy [bare]     # a proxy in HTTP_PROXY (bare: host:port), and a provider in NO_PROXY
    egress_probe.py tunnel CERT KEY  # that HTTPS provider behind a CONNECT proxy in HTTPS_PROXY
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


def tunnelling(log: list[str]):
    """A CONNECT proxy: notes the request line and proxy credentials, then relays bytes."""

    async def pipe(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def tunnel(reader, writer):
        line = (await reader.readline()).decode().strip()
        credentials = None
        while (header := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = header.decode().partition(":")
            if name.strip().lower() == "proxy-authorization":
                credentials = value.strip()
        log.append({"request": line, "credentials": credentials})
        host, _, port = line.split()[1].rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)

    return tunnel


async def tunnel(cert: str, key: str) -> dict:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = await asyncio.start_server(answering([]), "127.0.0.1", 0, ssl=context)
    connects: list[dict] = []
    relay = await asyncio.start_server(tunnelling(connects), "127.0.0.1", 0)
    os.environ["HTTPS_PROXY"] = f"http://gw%40corp:s3cret@127.0.0.1:{relay.sockets[0].getsockname()[1]}"
    results = await send_each([f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat"])
    return {"results": results, "connects": connects, "provider_port": server.sockets[0].getsockname()[1]}


async def proxy(spelling: str = "url") -> dict:
    """`spelling` "bare" sets HTTP_PROXY as host:port, with no scheme."""
    proxied, direct = [], []
    relay = await asyncio.start_server(answering(proxied), "127.0.0.1", 0)
    provider = await asyncio.start_server(answering(direct), "127.0.0.1", 0)
    address = f"127.0.0.1:{relay.sockets[0].getsockname()[1]}"
    os.environ["HTTP_PROXY"] = address if spelling == "bare" else f"http://{address}"
    os.environ["NO_PROXY"] = "127.0.0.1"
    urls = ["http://provider.invalid:9/v1/chat", f"http://127.0.0.1:{provider.sockets[0].getsockname()[1]}/v1/chat"]
    results = await send_each(urls)
    return {"results": results, "proxied": proxied, "direct": direct}


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    print(json.dumps(asyncio.run({"tls": tls, "proxy": proxy, "tunnel": tunnel}[mode](*args))))
