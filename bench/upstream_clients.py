"""Which async HTTP client should the gateway use upstream? Measure, don't guess.

For each candidate, a minimal granian ASGI pass-through (the shape of the gateway's hot
path: read body, POST it upstream, relay status, headers and body) is run in its own
process, and wrk drives it against the mock provider:

* ``c32``: ``wrk -t1 -c32 -d10s``, non-streaming chat completion (throughput);
* ``c1``: the same over one connection (latency);
* ``stream-c32``: streaming completion (11 SSE events, sent back to back) relayed as read;
* ``gaps-c32``: the same with 1 ms between events, so no client can merge them.

Besides req/s and latency, each run records the pass-through's CPU time per request
(process tree, user+system): on a shared box other tenants cut req/s, but change what a
request costs far less. ``gatewayd`` is the shipped wrapper (gatewayd.upstream), to show
its own overhead over the raw library.

Pinning (2 CPUs): the pass-through alone on CPU 1; the mock and wrk share CPU 0. The
``direct`` rows are wrk straight at the mock (mock on CPU 0, wrk on CPU 1). Clients run
round-robin ``--repeat`` times and medians are reported, so noise hits all alike.

    PYTHONPATH=python .venv/bin/python bench/upstream_clients.py [--duration 10] [--repeat 3] [--clients a,b]

Clients that are not importable are skipped; aiosonic, rnet and pyqwest are not project
dependencies (``pip install --target DIR aiosonic rnet pyqwest``, add DIR to PYTHONPATH).
Results: table on stdout, JSON (medians and every sample) in bench/results/upstream_clients.json.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
from granian import Granian
from granian.constants import Interfaces, Loops
from granian.log import LogLevels

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # reuse the test process helpers

from support.procs import free_port, start_process, stop_process  # noqa: E402

# name -> (import name, distribution name)
CANDIDATES = {
    "pyreqwest": ("pyreqwest", "pyreqwest"),
    "aiohttp": ("aiohttp", "aiohttp"),
    "httpx": ("httpx", "httpx"),
    "httpx2": ("httpx2", "httpx2"),
    "aiosonic": ("aiosonic", "aiosonic"),
    "rnet": ("rnet", "rnet"),
    "pyqwest": ("pyqwest", "pyqwest"),
    "gatewayd": ("gatewayd.upstream", "gatewayd"),  # the shipped wrapper, to show its overhead
}
POOL = 512
MOCK_CPU, PASSTHROUGH_CPU = "0", "1"
HOP_BY_HOP = frozenset({b"connection", b"content-length", b"transfer-encoding", b"date", b"server", b"keep-alive"})
UPSTREAM_HEADERS = [("content-type", "application/json"), ("authorization", "Bearer sk-bench")]

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","stream":%(stream)s,"messages":[{"role":"user","content":"hello there"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
wrk.headers["x-mock-chunk-delay-ms"] = "%(gap_ms)s"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p99_us":%%d,' ..
    '"errors":%%d,"non_2xx":%%d}\\n', summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), e.connect + e.read + e.write + e.timeout, e.status))
end
"""

# --- the pass-through, one adapter per client; runs inside the granian worker ---


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
        resp = await self.client.send("POST", url, headers, body, timeout=30)
        try:
            await start(resp.status, _relay_headers(resp.headers))
            async for chunk in resp.chunks():
                await emit(chunk)
        finally:
            await resp.aclose()


ADAPTERS = {
    "pyreqwest": PyreqwestAdapter,
    "aiohttp": AiohttpAdapter,
    "httpx": HttpxAdapter,
    "httpx2": Httpx2Adapter,
    "aiosonic": AiosonicAdapter,
    "rnet": RnetAdapter,
    "pyqwest": PyqwestAdapter,
    "gatewayd": GatewaydAdapter,
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
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
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


def serve_passthrough(port: int) -> None:
    Granian(
        "upstream_clients:create_app",
        factory=True,
        working_dir=HERE,
        address="127.0.0.1",
        port=port,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        workers=1,
        websockets=False,
        log_level=LogLevels.warning,
    ).serve()


# --- the driver ---


def wrk(url: str, connections: int, duration: int, stream: bool, gap_ms: int, cpu: str) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % {"stream": "true" if stream else "false", "gap_ms": gap_ms})
    try:
        argv = ["taskset", "-c", cpu, "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "-s", script.name, url]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script.name)
    raw = json.loads(next(line for line in out.splitlines() if line.startswith("WRK_JSON ")).split(" ", 1)[1])
    return {
        "requests": raw["requests"],
        "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "errors": raw["errors"],
        "non_2xx": raw["non_2xx"],
    }


# (name, connections, streaming, ms between stream events). With no gap, some clients hand
# over the whole burst as one chunk; a 1 ms gap makes every client pay for every event.
SCENARIOS = [("c32", 32, False, 0), ("c1", 1, False, 0), ("stream-c32", 32, True, 0), ("gaps-c32", 32, True, 1)]


def cpu_seconds(pid: int) -> float:
    """User+system CPU used so far by a process and its children (granian's workers)."""
    root = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])


def measure(name: str, base: str, path_for: dict[bool, str], wrk_cpu: str, server_pid: int, duration: int):
    """Run the scenarios against one server; CPU per request is counted on ``server_pid``'s tree.

    CPU per request is the figure to trust on a busy box: other tenants lower req/s but
    hardly change what a request costs.
    """
    rows = []
    for scenario, connections, stream, gap_ms in SCENARIOS:
        url = base + path_for[stream]
        wrk(url, connections, min(2, duration), stream, gap_ms, wrk_cpu)  # warm pools and caches
        before = cpu_seconds(server_pid)
        row = wrk(url, connections, duration, stream, gap_ms, wrk_cpu)
        row["cpu_us_per_req"] = round((cpu_seconds(server_pid) - before) / max(row["requests"], 1) * 1e6, 1)
        rows.append({"client": name, "scenario": scenario, **row})
        print(_row(rows[-1]), file=sys.stderr, flush=True)
    return rows


def measure_passthrough(name: str, mock_url: str, env: dict, duration: int) -> list[dict]:
    port = free_port()
    proc = start_process(
        ["taskset", "-c", PASSTHROUGH_CPU, sys.executable, __file__, "--serve", str(port)],
        f"http://127.0.0.1:{port}/",
        env={**env, "BENCH_CLIENT": name, "BENCH_UPSTREAM": mock_url},
    )
    try:
        paths = {False: "/", True: "/stream"}
        return measure(name, f"http://127.0.0.1:{port}", paths, MOCK_CPU, proc.pid, duration)
    finally:
        stop_process(proc)


def median_rows(samples: list[dict]) -> list[dict]:
    """One row per (client, scenario): the median of each figure over the repeats."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for sample in samples:
        groups.setdefault((sample["client"], sample["scenario"]), []).append(sample)
    return [
        {
            "client": client,
            "scenario": scenario,
            **{k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req")},
            "best_rps": max(r["rps"] for r in runs),
            "errors": sum(r["errors"] + r["non_2xx"] for r in runs),
            "runs": len(runs),
        }
        for (client, scenario), runs in groups.items()
    ]


HEADER = (
    "| client     | scenario   |  req/s | best req/s | p50 ms | p99 ms | CPU us/req | errors |\n"
    "|------------|------------|--------|------------|--------|--------|------------|--------|"
)


def _row(r: dict) -> str:
    errors = r["errors"] + r.get("non_2xx", 0)
    return (
        f"| {r['client']:<10} | {r['scenario']:<10} | {r['rps']:>6.0f} | {r.get('best_rps', r['rps']):>10.0f} |"
        f" {r['p50_ms']:>6.2f} | {r['p99_ms']:>6.2f} | {r['cpu_us_per_req']:>10.0f} | {errors:>6} |"
    )


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "source tree"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--repeat", type=int, default=3, help="rounds over all clients; medians are reported")
    parser.add_argument("--clients", default=",".join(CANDIDATES), help="comma-separated subset")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)  # pass-through child mode
    args = parser.parse_args()
    if args.serve:
        return serve_passthrough(args.serve)

    clients = [c for c in args.clients.split(",") if importlib.util.find_spec(CANDIDATES[c][0]) is not None]
    skipped = sorted(set(args.clients.split(",")) - set(clients))
    env = {"PYTHONPATH": os.pathsep.join([str(HERE.parent / "python"), os.environ.get("PYTHONPATH", "")])}
    mock_port = free_port()
    mock_url = f"http://127.0.0.1:{mock_port}"
    mock = start_process(
        ["taskset", "-c", MOCK_CPU, sys.executable, "-m", "gatewayd.mock", "--port", str(mock_port)],
        f"{mock_url}/_mock/health",
        env=env,
    )
    samples = []
    try:
        # Round-robin, so a burst of noise from elsewhere on the box hits every client alike.
        for _ in range(args.repeat):
            direct = {False: "/v1/chat/completions", True: "/v1/chat/completions"}
            samples += measure("direct", mock_url, direct, PASSTHROUGH_CPU, mock.pid, args.duration)
            for name in clients:
                samples += measure_passthrough(name, mock_url, env, args.duration)
    finally:
        stop_process(mock)

    rows = median_rows(samples)
    print(f"medians of {args.repeat} runs of {args.duration}s" + (f"; not installed: {', '.join(skipped)}" * bool(skipped)))
    print(HEADER)
    for row in rows:
        print(_row(row))
    result = {
        "how": "granian ASGI pass-through (1 worker, uvloop) -> mock (RSGI, 1 worker); wrk -t1; "
        f"pass-through on CPU {PASSTHROUGH_CPU}, mock and wrk on CPU {MOCK_CPU} (direct: wrk on CPU "
        f"{PASSTHROUGH_CPU}); {args.duration}s per run after a 2s warm-up; medians of {args.repeat} "
        "round-robin repeats",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "versions": {name: _version(CANDIDATES[name][1]) for name in clients},
        "results": rows,
        "samples": samples,
    }
    out = HERE / "results" / "upstream_clients.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
