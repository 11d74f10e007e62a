"""gatewayd's request pipeline in-process, against a bare ASGI app doing the same I/O, in
one run (pytest-benchmark): what our own glue costs, without granian or wrk around it.

    python -m pytest bench/test_pipeline.py --benchmark-only --benchmark-min-rounds=30 --benchmark-columns=median,ops

- cache hit: the whole GatewayApp (auth, 50-rule policy, cache lookup, audit append, the
  version headers; the shipped runtime config) answering from cache, against an app that reads the body and sends the
  same answer;
- upstream: GatewayApp forwarding to the bundled mock, against an app relaying the body
  through the same UpstreamClient;
- upstream, streamed: the same request with `stream: true` and no usage asked for: the
  gateway asks the provider for the usage chunk, strips it from the client's stream and
  reads the usage from the stream's last bytes;
- upstream, the measuring rod: the same request through bench/essential.py's handler, only
  the work no forwarded request can skip (its distance to the relay is the design's cost);
- upstream with a budget: a run-time key whose budget is checked before the call and
  charged after it (bench/compare_revisions.py: the cost of usage and budgets, before/after);
- cache hit during a canary: the same cache hit while a routing candidate serves half of
  the traffic, so each request also takes its sticky bucket (a hash of the caller's key)
  and picks its position: the difference to the first case is what choosing costs;
- traced (issue 17): the cache hit and the upstream request through a second GatewayApp with
  `[tracing]` on, every request sampled, its spans batched and exported over OTLP/HTTP (from
  the SDK's thread, whose CPU counts) to a receiver in a process of its own on the mock's
  CPU; `spans_exported` says how many of the spans made reached it.
The bench runs on CPU 1 and the mock on CPU 0 (when there are two), so the mock's work and
the scheduler's moves stay out of the figures. Each round serves BATCH requests on one
uvloop loop (32 at a time for the upstream pair),
so the figure per request (`us_per_request_median` in the JSON) is the median round / BATCH.
Beside it, `cpu_us_per_request` is the bench process's CPU time per request over all
rounds: when the mock sets the pace (the upstream pair), wall time hides what the
pipeline costs and CPU time shows it; `cpu_us_per_request_min` is that of the round that
took the least CPU (on a shared box, the least disturbed: what bench/ci.py gates on).
Under plain `pytest` (benchmarks disabled) each case runs once, as a test that it answers 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import uvloop

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from gateway_bench import PROMPT, SHIPPED_RUNTIME, pin, policy_50  # noqa: E402

from support.gateway import KEYS, PROVIDER_KEY, Gateway  # noqa: E402
from support.mock import start_mock  # noqa: E402
from support.procs import free_port, start_process, stop_process  # noqa: E402

BATCH = 320
CONCURRENCY = 32
CACHED = json.dumps({"model": "mock-gpt", "temperature": 0, "messages": [{"role": "user", "content": PROMPT}]}).encode()
PLAIN = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": PROMPT}]}).encode()
BARE_ANSWER = b'{"id":"chatcmpl-mock","object":"chat.completion","choices":[]}' * 6  # what the bare app answers
STREAMED = json.dumps({"model": "mock-gpt", "stream": True, "messages": [{"role": "user", "content": PROMPT}]}).encode()


def scope_for(body: bytes, key: str) -> dict:
    headers = [
        (b"host", b"gatewayd"),
        (b"content-type", b"application/json"),
        (b"authorization", b"Bearer " + key.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    return {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers}


class Served:
    """An ASGI `send` that keeps the last status, for the checks."""

    def __init__(self) -> None:
        self.status = 0

    async def __call__(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]


@pytest.fixture(scope="module")
def loop(mock_url):
    """After the mock: it is started, and this process pinned, before anything is measured."""
    loop = uvloop.new_event_loop()
    yield loop
    loop.close()


PINNED = (os.cpu_count() or 1) >= 2


@contextlib.contextmanager
def pinned_mock():
    """The mock on CPU 0 and this process on CPU 1 (when there are two); yields its URL."""
    url, proc = start_mock("--require-key", PROVIDER_KEY)
    if PINNED:
        pin([proc.pid], "0")
        os.sched_setaffinity(0, {1})  # this process, and the threads it starts from now on
    try:
        yield url
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def mock_url():
    with pinned_mock() as url:
        yield url


@pytest.fixture(scope="module")
def app(loop, mock_url, tmp_path_factory):
    with gateway_app(loop, mock_url, tmp_path_factory.mktemp("pipeline")) as gateway:
        yield gateway


@contextlib.contextmanager
def gateway_app(loop, mock_url: str, root: Path):
    """A real GatewayApp on the Gateway helper's config, with the bench's 50-rule policy."""
    gw = Gateway(root, int(mock_url.rsplit(":", 1)[1]), free_port())
    (root / "policy.yaml").write_text(policy_50())
    (root / "runtime.yaml").write_text(SHIPPED_RUNTIME.read_text())  # the shipped defaults
    os.environ["GATEWAYD_CONFIG"] = str(gw.config)
    from gatewayd import config
    from gatewayd.cli.serve import bootstrap
    from gatewayd.server.app import create_app

    bootstrap(config.load(str(gw.config)))
    gateway = create_app()
    loop.run_until_complete(gateway.startup())
    try:
        yield gateway
    finally:
        loop.run_until_complete(gateway.shutdown())


@pytest.fixture(scope="module")
def client(loop):
    with upstream_client(loop) as upstream:
        yield upstream


@contextlib.contextmanager
def upstream_client(loop):
    from gatewayd.upstream import UpstreamClient

    upstream = UpstreamClient()
    loop.run_until_complete(upstream.start())
    try:
        yield upstream
    finally:
        loop.run_until_complete(upstream.close())


CPU = {"seconds": 0.0, "requests": 0, "least": math.inf}  # this process's CPU time over the current test's batches


@pytest.fixture(autouse=True)
def _cpu_meter():
    CPU.update(seconds=0.0, requests=0, least=math.inf)


class Receive:
    """A request's `receive` as granian gives it: a future per call, the body first, then
    one that completes only when the connection ends (never, here: the bench's clients
    stay). A receive that answered a second call at once would make a watch on the client
    (ClientWatch) run a task per request that no server makes it run."""

    __slots__ = ("loop", "body")

    def __init__(self, loop, body):
        self.loop = loop
        self.body = body

    def __call__(self):
        body, self.body = self.body, None
        return body if body is not None else self.loop.create_future()


def serve(loop, handler, scope: dict, body: bytes, concurrency: int = 1) -> int:
    """Runs BATCH requests through `handler` (`concurrency` at a time); returns the last status."""
    message = loop.create_future()
    message.set_result({"type": "http.request", "body": body, "more_body": False})
    served = Served()

    async def worker(n: int) -> None:
        for _ in range(n):
            await handler(scope, Receive(loop, message), served)

    async def batch() -> None:
        await asyncio.gather(*(worker(BATCH // concurrency) for _ in range(concurrency)))

    started = time.process_time()
    loop.run_until_complete(batch())
    used = time.process_time() - started
    CPU["seconds"] += used
    CPU["requests"] += BATCH
    CPU["least"] = min(CPU["least"], used)
    return served.status


def bare_answer(body: bytes):
    async def handler(scope, receive, send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    return handler


def bare_relay(client, url: str):
    headers = [("content-type", "application/json"), ("authorization", f"Bearer {PROVIDER_KEY}")]

    async def handler(scope, receive, send) -> None:
        body = (await receive())["body"]
        upstream = await client.send("POST", url, headers, body, timeout=30)
        payload = await upstream.read()
        await upstream.aclose()
        start = {"type": "http.response.start", "status": upstream.status, "headers": upstream.headers}
        await send(start)
        await send({"type": "http.response.body", "body": payload})

    return handler


def per_request(benchmark) -> None:
    if benchmark.stats:
        benchmark.extra_info["us_per_request_median"] = round(benchmark.stats.stats.median / BATCH * 1e6, 2)
        benchmark.extra_info["cpu_us_per_request"] = round(CPU["seconds"] / CPU["requests"] * 1e6, 2)
        benchmark.extra_info["cpu_us_per_request_min"] = round(CPU["least"] / BATCH * 1e6, 2)


def test_cache_hit_through_gatewayd(benchmark, loop, app):
    scope = scope_for(CACHED, KEYS["acme"])
    serve(loop, app, scope, CACHED)  # the first answer fills the cache
    assert benchmark(serve, loop, app, scope, CACHED) == 200
    per_request(benchmark)


@pytest.fixture
def canary(app, loop):
    """A routing candidate at 50 % (the same document, pushed again) while the test runs."""
    from gatewayd import config
    from gatewayd.control import positions
    from gatewayd.control.registry import open_registry

    registry = open_registry(config.load(os.environ["GATEWAYD_CONFIG"]))
    routing = (Path(os.environ["GATEWAYD_CONFIG"]).parent / "routing.yaml").read_bytes()
    version = registry.push("routing", routing, "routing.yaml", "bench", "a candidate").id
    applied(app, loop, positions.canary(registry, "routing", "default", version, 50, "bench", "measure").id)
    yield
    applied(app, loop, registry.rollback("routing", "bench", "measured").id)
    registry.close()


def applied(app, loop, change_id: int) -> None:
    """Waits (running the loop) until the app's replica serves change `change_id`."""
    deadline = time.monotonic() + 10
    while app.agent.snapshot.change_id < change_id:
        assert time.monotonic() < deadline, "the replica did not apply the change"
        loop.run_until_complete(asyncio.sleep(0.01))


def test_cache_hit_through_gatewayd_during_a_canary(benchmark, loop, app, canary):
    scope = scope_for(CACHED, KEYS["acme"])
    serve(loop, app, scope, CACHED)  # the first answer fills the cache of this position
    assert app.agent.snapshot.route("acme", "chat").split
    assert benchmark(serve, loop, app, scope, CACHED) == 200
    per_request(benchmark)


def test_cache_hit_floor_bare_asgi_answer(benchmark, loop):
    assert benchmark(serve, loop, bare_answer(BARE_ANSWER), scope_for(CACHED, ""), CACHED) == 200
    per_request(benchmark)


def test_upstream_through_gatewayd(benchmark, loop, app):
    scope = scope_for(PLAIN, KEYS["acme"])
    assert benchmark(serve, loop, app, scope, PLAIN, CONCURRENCY) == 200
    per_request(benchmark)


def test_upstream_streamed_through_gatewayd(benchmark, loop, app):
    """A stream the client asked no usage of: the gateway asks for it, strips its chunk and
    reads the usage from the stream's last bytes."""
    scope = scope_for(STREAMED, KEYS["acme"])
    assert benchmark(serve, loop, app, scope, STREAMED, CONCURRENCY) == 200
    per_request(benchmark)


@pytest.fixture
def budgeted_key(app, loop):
    """A run-time key with a budget it never reaches: each request is checked against the
    cluster's spend and charged after its answer."""
    keys = pytest.importorskip("gatewayd.control.keys")  # not in revisions before run-time keys
    from gatewayd import config
    from gatewayd.control.registry import open_registry

    registry = open_registry(config.load(os.environ["GATEWAYD_CONFIG"]))
    budget = keys.make_budget(None, 10**12, "month")
    secret, _, change = keys.create_key(registry, tenant="acme", name="bench", actor="bench", budget=budget)
    applied(app, loop, change.id)
    yield secret
    keys.revoke_key(registry, "bench", actor="bench", reason="measured")
    registry.close()


def test_upstream_through_gatewayd_with_a_budget(benchmark, loop, app, budgeted_key):
    scope = scope_for(PLAIN, budgeted_key)
    assert benchmark(serve, loop, app, scope, PLAIN, CONCURRENCY) == 200
    per_request(benchmark)


def test_upstream_essential_rod(benchmark, loop, app):
    """The measuring rod (bench/essential.py): the same request through only the work no
    forwarded request can skip. Between the bare relay and gatewayd: this design's own
    cost below it, the pipeline's above it."""
    from essential import essential_upstream

    scope = scope_for(PLAIN, KEYS["acme"])
    assert benchmark(serve, loop, essential_upstream(app), scope, PLAIN, CONCURRENCY) == 200
    per_request(benchmark)


def test_upstream_floor_bare_relay(benchmark, loop, client, mock_url):
    relay = bare_relay(client, mock_url + "/v1/chat/completions")
    assert benchmark(serve, loop, relay, scope_for(PLAIN, ""), PLAIN, CONCURRENCY) == 200
    per_request(benchmark)


# Issue 14: what translation adds, against the same request untranslated. Both requests of
# a pair reach the same Anthropic mock route and read the same upstream bytes; one is an
# OpenAI chat request (translated there and back), the other the Anthropic messages request
# it translates to (relayed as it is).
TRANSLATED = {"model": "only-claude-bench", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 256}
NATIVE = {**TRANSLATED, "model": "mock-claude"}  # mock-* reaches mock-anthropic natively on /v1/messages
STREAM_EVENTS = 14  # the mock's Anthropic stream: start, block start, ping, 8 deltas, block stop, delta, stop


def _scope(body: bytes, path: str) -> dict:
    return {**scope_for(body, KEYS["acme"]), "path": path}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("api", ["translated", "native"])
def test_upstream_translation(benchmark, loop, app, api, stream):
    request = {**(TRANSLATED if api == "translated" else NATIVE), "stream": stream}
    body = json.dumps(request).encode()
    scope = _scope(body, "/v1/chat/completions" if api == "translated" else "/v1/messages")
    assert benchmark(serve, loop, app, scope, body, CONCURRENCY) == 200
    per_request(benchmark)
    if benchmark.stats:
        benchmark.extra_info["upstream_events"] = STREAM_EVENTS if stream else 0


@pytest.fixture(scope="module")
def traced_app(loop, mock_url, tmp_path_factory):
    """A second GatewayApp like `app`, with tracing on, and the URL of its OTLP receiver."""
    pytest.importorskip("gatewayd.server.traced")  # not in revisions before tracing
    port = free_port()
    receiver = f"http://127.0.0.1:{port}"
    otlp = start_process([sys.executable, str(HERE.parent / "tests" / "support" / "otlp.py"), str(port)], receiver)
    if PINNED:
        pin([otlp.pid], "0")
    root = tmp_path_factory.mktemp("traced")
    tracing = f'[tracing]\nendpoint = "{receiver}"\n'
    gw = Gateway(root, int(mock_url.rsplit(":", 1)[1]), free_port(), extra_providers=tracing)
    (root / "policy.yaml").write_text(policy_50())
    (root / "runtime.yaml").write_text(SHIPPED_RUNTIME.read_text())
    from gatewayd import config
    from gatewayd.cli.serve import bootstrap
    from gatewayd.server.app import GatewayApp

    settings = config.load(str(gw.config))
    bootstrap(settings)
    gateway = GatewayApp(settings)
    loop.run_until_complete(gateway.startup())
    assert gateway.tracer_provider is not None
    yield gateway, receiver
    loop.run_until_complete(gateway.shutdown())
    stop_process(otlp)


def received(receiver: str) -> int:
    with urllib.request.urlopen(receiver) as answer:
        return int(answer.read())


def exported(benchmark, app, receiver: str, before: tuple[int, int], spans_per_request: int) -> None:
    """How many of the spans the measured requests made reached the receiver (the SDK drops
    what its queue cannot hold while its thread exports); `before`: the receiver's count and
    CPU["requests"] before them."""
    app.tracer_provider.force_flush()
    if benchmark.stats:
        benchmark.extra_info["spans_exported"] = received(receiver) - before[0]
        benchmark.extra_info["spans_made"] = (CPU["requests"] - before[1]) * spans_per_request


def test_cache_hit_through_gatewayd_traced(benchmark, loop, traced_app):
    app, receiver = traced_app
    scope = scope_for(CACHED, KEYS["acme"])
    serve(loop, app, scope, CACHED)  # the first answer fills the cache
    app.tracer_provider.force_flush()
    before = received(receiver), CPU["requests"]
    assert benchmark(serve, loop, app, scope, CACHED) == 200
    per_request(benchmark)
    exported(benchmark, app, receiver, before, 3)  # server, admission, audit append


def test_upstream_through_gatewayd_traced(benchmark, loop, traced_app):
    app, receiver = traced_app
    app.tracer_provider.force_flush()
    before = received(receiver), CPU["requests"]
    scope = scope_for(PLAIN, KEYS["acme"])
    assert benchmark(serve, loop, app, scope, PLAIN, CONCURRENCY) == 200
    per_request(benchmark)
    exported(benchmark, app, receiver, before, 4)  # server, admission, upstream call, audit append
