"""The pass-through that bench/upstream_clients.py measures: one adapter per HTTP client.

Run by the bench as ``passthrough.py PORT`` with ``BENCH_CLIENT`` (an ``ADAPTERS`` key)
and ``BENCH_UPSTREAM`` (the mock's base URL) in the environment: a granian ASGI app that
reads the body, POSTs it upstream and relays status, headers and body (``/stream``: as
it is read). Incoming ``x-mock-*`` headers travel on, as a gateway would forward them.
``BENCH_CLIENT=canned`` is the do-nothing app: it reads the body and answers the mock's
completion fetched once at start-up, the floor under a gateway's cache hit. Both read the
body as gatewayd does, whole at its Content-Length.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from granian import Granian
from granian.constants import Interfaces, Loops
from granian.log import LogLevels

POOL = 512
HOP_BY_HOP = frozenset({b"connection", b"content-length", b"transfer-encoding", b"date", b"server", b"keep-alive"})
UPSTREAM_HEADERS = [("content-type", "application/json"), ("authorization", "Bearer sk-bench")]


def _relay_headers(pairs) -> list[tuple[bytes, bytes]]:
    out = []
    for name, value in pairs:
        name = (name if isinstance(name, bytes) else name.encode()).lower()
        if name not in HOP_BY_HOP:
            out.append((name, value if isinstance(value, bytes) else value.encode()))
    return out


class PyreqwestAdapter:
    async def start(self):
        from pyreqwest.client import ClientBuilder

        self.client = ClientBuilder().max_connections(POOL).build()

    async def post(self, url, headers, body):
        resp = await self.client.post(url).headers(headers).body_bytes(body).build().send()
        return resp.status, _relay_headers(resp.headers.items()), bytes(await resp.bytes())

    async def stream(self, url, headers, body, start, emit):
        # A read-ahead limit of 0 hands over the response at its headers; the default
        # (64 KiB) would hold a whole short SSE stream back until it ends.
        request = self.client.post(url).headers(headers).body_bytes(body).streamed_read_buffer_limit(0)
        async with request.build_streamed() as resp:
            await start(resp.status, _relay_headers(resp.headers.items()))
            while (chunk := await resp.body_reader.read_chunk()) is not None:
                await emit(bytes(chunk))


class AiohttpAdapter:
    async def start(self):
        import aiohttp

        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=POOL), auto_decompress=False)

    async def post(self, url, headers, body):
        async with self.session.post(url, data=body, headers=headers) as resp:
            return resp.status, _relay_headers(resp.raw_headers), await resp.read()

    async def stream(self, url, headers, body, start, emit):
        async with self.session.post(url, data=body, headers=headers) as resp:
            await start(resp.status, _relay_headers(resp.raw_headers))
            async for chunk in resp.content.iter_any():
                await emit(chunk)


class HttpxAdapter:
    module = "httpx"

    async def start(self):
        httpx = __import__(self.module)
        limits = httpx.Limits(max_connections=POOL, max_keepalive_connections=POOL)
        self.client = httpx.AsyncClient(limits=limits, timeout=30)

    async def post(self, url, headers, body):
        resp = await self.client.post(url, content=body, headers=headers)
        return resp.status_code, _relay_headers(resp.headers.raw), resp.content

    async def stream(self, url, headers, body, start, emit):
        async with self.client.stream("POST", url, content=body, headers=headers) as resp:
            await start(resp.status_code, _relay_headers(resp.headers.raw))
            async for chunk in resp.aiter_raw():
                await emit(chunk)


class Httpx2Adapter(HttpxAdapter):
    module = "httpx2"


class AiosonicAdapter:
    async def start(self):
        import aiosonic
        from aiosonic.pools import PoolConfig

        connector = aiosonic.TCPConnector(pool_configs={":default": PoolConfig(size=POOL, max_conn_requests=None)})
        self.client = aiosonic.HTTPClient(connector=connector)

    async def post(self, url, headers, body):
        resp = await self.client.post(url, data=body, headers=dict(headers))
        return resp.status_code, _relay_headers(resp.raw_headers), await resp.content()

    async def stream(self, url, headers, body, start, emit):
        resp = await self.client.post(url, data=body, headers=dict(headers))
        await start(resp.status_code, _relay_headers(resp.raw_headers))
        async for chunk in resp.read_chunks():
            await emit(chunk)


class RnetAdapter:
    async def start(self):
        import rnet

        self.client = rnet.Client(pool_max_size=POOL)

    async def post(self, url, headers, body):
        resp = await self.client.post(url, body=body, headers=dict(headers))
        return resp.status, _relay_headers(resp.headers.items()), await resp.bytes()

    async def stream(self, url, headers, body, start, emit):
        resp = await self.client.post(url, body=body, headers=dict(headers))
        await start(resp.status, _relay_headers(resp.headers.items()))
        async with resp.stream() as chunks:
            async for chunk in chunks:
                await emit(chunk)


class PyqwestAdapter:
    async def start(self):
        import pyqwest

        self.pyqwest = pyqwest
        self.transport = pyqwest.HTTPTransport(
            pool_max_idle_per_host=POOL,  # default 2: connections would churn under load
            enable_gzip=False,
            enable_brotli=False,
            enable_zstd=False,
            enable_otel=False,
        )
        self.client = pyqwest.Client(self.transport)

    async def post(self, url, headers, body):
        resp = await self.client.execute("POST", url, headers, body)
        return resp.status, _relay_headers(resp.headers.items()), resp.content

    async def stream(self, url, headers, body, start, emit):
        request = self.pyqwest.Request("POST", url, self.pyqwest.Headers(headers), body)
        resp = await self.transport.execute(request)
        await start(resp.status, _relay_headers(resp.headers.items()))
        async for chunk in resp.content:
            await emit(bytes(chunk))


class GatewaydAdapter:
    async def start(self):
        from gatewayd.upstream import UpstreamClient

        self.client = UpstreamClient(max_connections=POOL)
        await self.client.start()

    async def post(self, url, headers, body):
        resp = await self.client.send("POST", url, headers, body, timeout=30)
        try:
            return resp.status, _relay_headers(resp.headers), await resp.read()
        finally:
            await resp.aclose()

    async def stream(self, url, headers, body, start, emit):
        resp = await self.client.send("POST", url, headers, body, timeout=30, stream=True)
        try:
            await start(resp.status, _relay_headers(resp.headers))
            async for chunk in resp.chunks():
                await emit(chunk)
        finally:
            await resp.aclose()


class CannedAdapter:
    """No upstream call: the answer the mock gave once, at start-up, every time."""

    async def start(self):
        import urllib.request

        request = urllib.request.Request(
            os.environ["BENCH_UPSTREAM"] + "/v1/chat/completions",
            json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hello"}]}).encode(),
            dict(UPSTREAM_HEADERS),
        )
        with urllib.request.urlopen(request) as resp:  # once, before serving: blocking is fine
            self.answer = resp.status, [(b"content-type", b"application/json")], resp.read()

    async def post(self, url, headers, body):
        return self.answer


ADAPTERS = {
    "pyreqwest": PyreqwestAdapter,
    "aiohttp": AiohttpAdapter,
    "httpx": HttpxAdapter,
    "httpx2": Httpx2Adapter,
    "aiosonic": AiosonicAdapter,
    "rnet": RnetAdapter,
    "pyqwest": PyqwestAdapter,
    "gatewayd": GatewaydAdapter,
    "canned": CannedAdapter,
}


def create_app():
    """Granian factory for the pass-through; client and upstream come from the environment."""
    adapter = ADAPTERS[os.environ["BENCH_CLIENT"]]()
    upstream = os.environ["BENCH_UPSTREAM"] + "/v1/chat/completions"

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":  # the client must be created inside the worker's loop
            await receive()  # lifespan.startup
            await adapter.start()
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            await send({"type": "lifespan.shutdown.complete"})
            return
        declared = next((int(value) for name, value in scope["headers"] if name == b"content-length"), None)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            # Whole at its Content-Length, as gatewayd reads it: granian's empty end-of-body
            # message (a round trip to its thread) is left unread.
            if not message.get("more_body") or len(body) == declared:
                break
        # x-mock-* knobs travel on to the mock, as a gateway would forward them.
        knobs = [(k.decode(), v.decode()) for k, v in scope["headers"] if k.startswith(b"x-mock-")]
        headers = UPSTREAM_HEADERS + knobs
        if scope["path"] == "/stream":

            async def start(status, headers):
                await send({"type": "http.response.start", "status": status, "headers": headers})

            async def emit(chunk):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})

            await adapter.stream(upstream, headers, body, start, emit)
            await send({"type": "http.response.body", "body": b""})
            return
        status, relayed, payload = await adapter.post(upstream, headers, body)
        await send({"type": "http.response.start", "status": status, "headers": relayed})
        await send({"type": "http.response.body", "body": payload})

    return app


def serve(port: int, target: str = "passthrough:create_app", factory: bool = True) -> None:
    """One granian ASGI worker on `port` serving `target` (a module in bench/)."""
    Granian(
        target,
        factory=factory,
        working_dir=Path(__file__).resolve().parent,
        address="127.0.0.1",
        port=port,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        workers=1,
        websockets=False,
        log_level=LogLevels.warning,
    ).serve()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
