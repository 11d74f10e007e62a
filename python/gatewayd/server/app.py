"""The application one granian worker serves, over ASGI or RSGI: a replica of the gateway.

Each worker is a replica: it claims a stable name, opens its own audit chain and cache,
starts a replica agent that follows the store's pointers, and serves the OpenAI and
Anthropic endpoints through the pipeline.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

import msgspec

from gatewayd import _core, config
from gatewayd.audit.runtime import AuditRuntime
from gatewayd.audit.verify import REFUSED_CHAIN
from gatewayd.control.agent import ReplicaAgent
from gatewayd.control.last_known_good import LastKnownGood
from gatewayd.control.snapshot import InService, Snapshot
from gatewayd.control.stores import open_store
from gatewayd.server import asgi, errors, metrics, rsgi, tracing
from gatewayd.server.asgi import JSON, respond
from gatewayd.server.auth import Authenticator
from gatewayd.server.budgets import BudgetLedger
from gatewayd.server.connections import ConnectionCapWatch, connection_cap
from gatewayd.server.pipeline import AuditUnavailable, Pipeline
from gatewayd.server.replica import claim_replica
from gatewayd.upstream import UpstreamClient
from gatewayd.upstream.providers import ProviderEndpoint

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("gatewayd")

# Routes are looked up by the raw path, as the client sent it: a percent-encoded spelling
# (`/v1/chat%2fcompletions`, `/%6detrics`) names no route and gets a 404.
LLM_ROUTES = {
    b"/v1/chat/completions": "chat",
    b"/v1/completions": "completions",
    b"/v1/embeddings": "embeddings",
    b"/v1/messages": "messages",
}
MODELS, METRICS, HEALTHZ, READYZ = "models", "metrics", "healthz", "readyz"
GATEWAY_ROUTES = {b"/v1/models": MODELS, b"/metrics": METRICS, b"/healthz": HEALTHZ, b"/readyz": READYZ}
_encode = msgspec.json.encode
# Before a replica has applied any state (an empty store, no bootstrap, no last-known-good).
NOT_READY = "this replica has no policy, routing or config applied yet; see /readyz"


class GatewayApp:
    def __init__(self, settings: config.Settings):
        self.settings = settings
        self.pipeline: Pipeline | None = None
        self.agent: ReplicaAgent | None = None
        self.engine: _core.Engine | None = None
        self.audit: AuditRuntime | None = None
        self.client: UpstreamClient | None = None
        # The version sets served, for streams in flight to notice theirs leaving (R6).
        self.in_service = InService()
        self._metrics_task: asyncio.Task | None = None
        self._gc_frozen = 0  # objects gc.freeze() took out of the collector at start-up
        self._client_guard_task: asyncio.Task | None = None
        self.budgets: BudgetLedger | None = None
        self.tracer_provider: TracerProvider | None = None  # when tracing is on: the pipeline is a TracedPipeline

    async def __call__(self, scope: dict, receive, send) -> None:
        """Routes one request; a bug surfaces as a 500 in the API's error shape, never a traceback."""
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(receive, send)
            return
        try:
            await self._route(scope, receive, send)
        except AuditUnavailable as exc:
            log.error("refusing %s %s: audit trail unavailable: %s", scope["method"], scope["path"], exc)
            message = "the audit trail cannot be written; the gateway serves nothing unrecorded"
            try:
                await _error(send, 503, message, "audit_unavailable", scope["path"] == "/v1/messages")
            except Exception:  # the response had already started: the server closes the stream
                pass
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            anthropic = scope["path"] == "/v1/messages"
            try:
                await _error(send, 500, "internal gateway error; see the gateway log", "internal_error", anthropic)
            except Exception:  # the response had already started: the server closes the stream
                pass

    # granian's RSGI entry points ([server] interface = "rsgi"): the same app, adapted.
    async def __rsgi__(self, scope, protocol) -> None:
        await rsgi.serve(self, scope, protocol)

    def __rsgi_init__(self, loop) -> None:
        loop.run_until_complete(self.startup())

    def __rsgi_del__(self, loop) -> None:
        loop.run_until_complete(self.shutdown())

    def _route(self, scope: dict, receive, send) -> Awaitable[None]:
        """The answer to one request, to be awaited: a coroutine frame less per request."""
        # raw_path is optional in ASGI; granian always sends it.
        raw_path = scope.get("raw_path") or scope["path"].encode()
        api = LLM_ROUTES.get(raw_path)
        if api is not None:
            if scope["method"] != "POST":
                message = f"{scope['path']} accepts POST only"
                return _error(send, 405, message, "method_not_allowed", api == "messages")
            assert self.pipeline is not None and self.agent is not None  # set by startup(), before any request
            if self.agent.snapshot is None:
                return _error(send, 503, NOT_READY, "not_ready", api == "messages")
            return self.pipeline.handle(scope, receive, send, api)
        route = GATEWAY_ROUTES.get(raw_path)
        if route is MODELS and scope["method"] == "GET":
            return self._models(scope, send)
        if route is METRICS and self.settings.server.metrics_on_data_port:
            self._write_metrics()
            body = metrics.render(self.metrics_dir.read_all())
            return respond(send, 200, [(b"content-type", b"text/plain; version=0.0.4")], body)
        if route is HEALTHZ:
            return respond(send, 200, [(b"content-type", JSON)], b'{"status":"ok"}')
        if route is READYZ:
            agent = self.agent
            ready = agent is not None and agent.snapshot is not None
            body = _encode(
                {
                    "ready": ready,
                    "replica": agent.name if agent else None,
                    "live_replicas": agent.live_replicas if agent else 0,
                    # Providers skipped for their fallbacks after failing in a row (ejection).
                    "ejected_providers": self.pipeline.health.ejected(time.monotonic()) if self.pipeline else [],
                    # cluster, or per-replica while the control store does not answer
                    "budgets": self.budgets.readiness() if self.budgets else None,
                }
            )
            return respond(send, 200 if ready else 503, [(b"content-type", JSON)], body)
        message = f"no route for {scope['method']} {raw_path.decode('latin-1')}"
        return _error(send, 404, message, "not_found", False)

    async def _models(self, scope: dict, send) -> None:
        """Answered by the gateway: the models the active routing version serves."""
        assert self.pipeline is not None and self.agent is not None  # set by startup(), before any request
        if self.pipeline.auth.tenant(scope["headers"]) is None:
            return await _error(send, 401, "invalid or missing API key", "invalid_api_key", False)
        snap = self.agent.snapshot
        if snap is None:
            return await _error(send, 503, NOT_READY, "not_ready", False)
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "gatewayd"} for m in snap.routing.models]
        await respond(send, 200, [(b"content-type", JSON)], _encode({"object": "list", "data": data}))

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # refuse to serve half-started
                    log.exception("gatewayd worker failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        s = self.settings

        def open_engine(replica: str) -> _core.Engine:
            return _core.Engine(
                s.cache.max_entries, s.cache.max_bytes, str(s.path(s.audit.dir)), replica, s.audit.segment_bytes
            )

        claim = claim_replica(s.path(s.control.dir) / "slots", s.server.replica_prefix, open_engine)
        name, engine, self._slot_fds = claim.name, claim.opened, claim.fds
        self.engine = engine
        self.audit = AuditRuntime(engine, s)
        for refused, error in claim.refused:  # in this replica's chain, for verify to report
            engine.event(_encode({"kind": "replica", "event": REFUSED_CHAIN, "refused": refused, "error": error}))
        self.audit.start()
        providers = [(n, p.kind) for n, p in s.providers.items()]
        state_dir = s.path(s.control.dir)
        auth = Authenticator(s.keys)  # the agent gives it the run-time keys as it applies changes
        self.agent = ReplicaAgent(
            name,
            open_store(s),
            providers,
            LastKnownGood(state_dir / "last-known-good" / f"{name}.json"),
            on_event=lambda event: engine.event(_encode(event)),
            on_swap=self._on_swap,
            after_answer=self.audit.boundary,
            resync_interval_s=s.control.resync_interval_ms / 1000,
            traffic=engine.metrics_json,
            on_keys=auth.use_runtime_keys,
        )
        self.agent.start()
        self.metrics_dir = metrics.MetricsDir(state_dir / "metrics")
        self._metrics_task = asyncio.get_running_loop().create_task(self._flush_metrics())
        asgi.body_deadlines = asgi.BodyDeadlines(
            s.server.body_idle_timeout_s, s.server.body_timeout_s, asyncio.get_running_loop()
        )
        self._client_guard_task = asyncio.get_running_loop().create_task(self._guard_against_clients())
        limits: dict[str, int] = {}
        for p in s.providers.values():  # providers sharing a host share its budget
            limits[p.base_url] = max(limits.get(p.base_url, 0), p.max_connections)
        self.client = UpstreamClient(max_connections=max(limits.values()), limits=limits)
        await self.client.start()
        endpoints = {n: ProviderEndpoint(n, p) for n, p in s.providers.items()}
        self.budgets = BudgetLedger(open_store(s), name)  # a store handle of its own, for its thread
        self.budgets.start()
        make: Callable[..., Pipeline] = Pipeline
        self.tracer_provider = tracing.start(s, name)
        if self.tracer_provider is not None:  # the SDK is imported only then
            from gatewayd.server.traced import TracedPipeline

            make = functools.partial(TracedPipeline, provider=self.tracer_provider)
        self.pipeline = make(
            self.engine,
            self.agent,
            auth,
            self.client,
            endpoints,
            s.server.max_body_bytes,
            self.audit,
            self.in_service,
            self.budgets,
        )
        # What exists now lives as long as the worker (modules, documents, the pipeline): out
        # of the cyclic collector's sight, its full passes stop walking some 40k objects, a
        # pause of several ms every few thousand requests (the gc module's advice for servers).
        gc.collect()
        gc.freeze()
        # Counted once: the count walks the frozen objects (about 1 ms), and nothing joins them later.
        self._gc_frozen = gc.get_freeze_count()
        log.info("replica %s serving (pid %d)", name, os.getpid())

    async def _guard_against_clients(self) -> None:
        """Ends the body reads of stalled clients (408) a few times a second, and once a
        second logs whether this worker's connections are at the cap."""
        server, deadlines = self.settings.server, asgi.body_deadlines
        cap = ConnectionCapWatch(server.port, connection_cap(server.max_connections))
        interval = min(1.0, deadlines.idle_s / 4, deadlines.total_s / 4)
        next_cap_check = 0.0
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            deadlines.sweep(now)
            if now >= next_cap_check:
                next_cap_check = now + 1.0
                cap.check()

    async def _flush_metrics(self) -> None:
        while True:
            try:
                self._write_metrics()
            except OSError:
                log.exception("could not write metrics")
            await asyncio.sleep(1.0)

    def _write_metrics(self) -> None:
        agent, pipeline, engine = self.agent, self.pipeline, self.engine
        # All set by startup(), which creates the metrics task and yields to no other task
        # before the last of them is set; /metrics comes after startup too.
        assert agent is not None and pipeline is not None and engine is not None
        snap = agent.snapshot
        self.metrics_dir.write(
            metrics.ReplicaMetrics(
                replica=agent.name,
                written_at=time.time(),
                change_id=agent.applied_change,
                versions=snap.versions() if snap else {},
                counters=dict(
                    agent.counters,
                    unrecorded_requests=pipeline.unrecorded,
                    audit_write_failures=pipeline.audit_write_failures,
                    shadow_routing_skipped=pipeline.mirror.skipped,
                ),
                engine=msgspec.Raw(engine.metrics_json()),
                shadow_routing=[(v, s, shape, int(n), t) for (v, s, shape), (n, t) in pipeline.mirror.stats.items()],
                usage=pipeline.engine.usage_rows(),
                budgets=self.budgets.levels() if self.budgets else [],
                gc_passes=[generation["collections"] for generation in gc.get_stats()],
                gc_frozen=self._gc_frozen,
            )
        )

    def _on_swap(self, snap: Snapshot) -> None:
        """Fence the cache to the version sets the new snapshot serves (R5), tell the
        streams in flight which those are (R6), and adopt its audit durability setting
        (R12)."""
        assert self.engine is not None  # the agent, which calls this, starts after the engine opened
        active = snap.active_version_sets()
        self.engine.fence(active)
        self.in_service.swap(active, snap.change_id)
        audit = snap.config.audit
        # A str to msgspec; documents.runtime_config checked it is one of the policies. (The
        # alias exists in the stubs only, hence the quotes.)
        self.engine.set_audit_sync(cast("_core.FsyncPolicy", audit.fsync), audit.fsync_interval_ms)

    async def shutdown(self) -> None:
        if self._metrics_task:
            self._metrics_task.cancel()
        if self._client_guard_task:
            self._client_guard_task.cancel()
        if self.client:
            await self.client.close()
        if self.agent:
            self.agent.stop()
        if self.budgets:
            self.budgets.stop()
        if self.audit:
            await self.audit.stop()  # a last fsync and checkpoint
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()  # exports the spans still batched


async def _error(send, status: int, message: str, code: str, anthropic: bool) -> None:
    await respond(send, status, [(b"content-type", JSON)], errors.error_body(status, message, code, anthropic))


def create_app() -> GatewayApp:
    """granian's factory entry point: the config path comes through the environment."""
    logging.basicConfig(
        level=os.environ.get("GATEWAYD_LOG_LEVEL", "INFO"), format="%(levelname)s %(name)s: %(message)s"
    )
    return GatewayApp(config.load(os.environ.get("GATEWAYD_CONFIG") or None))
