"""The pipeline with spans, used instead of Pipeline only when tracing is on (so off costs the
request path nothing at all): a server span per request, joined to the client's W3C
`traceparent`, with children for admission (policy + cache, one Rust call), each upstream
call (until its answer is read or its stream ends) and the audit append.

Spans carry what was decided, never what was said: no prompt, answer or key.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gatewayd import _core
from gatewayd.server.asgi import Receive, Send
from gatewayd.server.pipeline import Pipeline
from gatewayd.upstream import UpstreamError

PROPAGATOR = TraceContextTextMapPropagator()
TRACE_HEADERS = (b"traceparent", b"tracestate")
PATHS = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
    "messages": "/v1/messages",
}
# gen_ai.operation.name, by the gateway's API name.
OPERATIONS = {"chat": "chat", "completions": "text_completion", "embeddings": "embeddings", "messages": "chat"}


class RequestSpans:
    """The spans of the request being handled (in the task's context): its server span, the
    context its children start in, and the upstream call still open, if any."""

    __slots__ = ("server", "context", "upstream", "admission", "attempts")

    def __init__(self, server: Span) -> None:
        self.server = server
        self.context = trace.set_span_in_context(server)
        self.upstream: Span | None = None
        self.admission: _core.Admission | None = None
        self.attempts = 0  # upstream calls made so far: each one before the last failed

    def end_upstream(self) -> None:
        if self.upstream is not None:
            self.upstream.end()
            self.upstream = None


_current: ContextVar[RequestSpans | None] = ContextVar("gatewayd_request_spans", default=None)


class TracedPipeline(Pipeline):
    """Pipeline, with its admission, upstream calls and audit appends in spans. Each child
    span is made once, with its attributes, and is not made current: the pipeline is the
    only code that starts spans, so no context is attached per request."""

    def __init__(self, *args, provider: TracerProvider, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tracer = provider.get_tracer("gatewayd")
        # Only the request path's engine calls are traced; the mirror keeps the plain one.
        self.engine = TracedEngine(self.engine, self.tracer)

    async def handle(self, scope: dict, receive: Receive, send: Send, api: str) -> None:
        carrier = {name.decode(): value.decode("latin-1") for name, value in scope["headers"] if name in TRACE_HEADERS}
        parent = PROPAGATOR.extract(carrier) if carrier else None  # malformed: ignored, a new trace
        path = PATHS[api]
        span = self.tracer.start_span(
            f"POST {path}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": "POST", "http.route": path},
        )
        spans = RequestSpans(span)
        token = _current.set(spans)

        async def traced_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(StatusCode.ERROR)
            await send(message)

        try:
            await super().handle(scope, receive, traced_send, api)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(StatusCode.ERROR, type(exc).__name__)
            raise
        finally:
            spans.end_upstream()
            _current.reset(token)
            span.end()

    async def _call(self, scope, name: str, api: str, stream: bool, body: bytes, config):
        """One upstream call in a client span, which the upstream gets as its parent in
        `traceparent` (with the client's `tracestate`); it stays open until the answer is
        recorded (a stream: its end) or the next upstream is tried."""
        spans = _current.get()
        if spans is None:  # a call outside a traced request (none today)
            return await super()._call(scope, name, api, stream, body, config)
        spans.end_upstream()
        model = _model_for(spans.admission, name)
        operation = OPERATIONS[api]
        span = self.tracer.start_span(
            f"{operation} {model}",
            context=spans.context,
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.system": self.providers[name].kind,
                "gen_ai.operation.name": operation,
                "gen_ai.request.model": model,
                "gatewayd.provider": name,
                "gatewayd.failovers": spans.attempts,
                "gatewayd.stream": stream,
            },
        )
        spans.attempts += 1
        ctx = span.get_span_context()
        headers = [(k, v) for k, v in scope["headers"] if k not in TRACE_HEADERS]
        headers.append((b"traceparent", b"00-%032x-%016x-%02x" % (ctx.trace_id, ctx.span_id, ctx.trace_flags)))
        if ctx.trace_state:
            headers.append((b"tracestate", ctx.trace_state.to_header().encode()))
        answer = await super()._call({**scope, "headers": headers}, name, api, stream, body, config)
        if isinstance(answer, UpstreamError):
            span.set_attribute("error.type", answer.kind)
            span.set_status(StatusCode.ERROR, str(answer))
            span.end()
        else:
            span.set_attribute("http.response.status_code", answer.status)
            if answer.status >= 400:
                span.set_attribute("error.type", str(answer.status))
                span.set_status(StatusCode.ERROR)
            spans.upstream = span
        return answer


def _model_for(adm: _core.Admission | None, provider: str) -> str:
    """The model a request asks `provider` for: its own, or that of the fallback naming it."""
    if adm is None:
        return ""
    if adm.provider == provider:
        return adm.upstream_model or adm.model
    return next((f.model for f in adm.fallbacks if f.provider == provider), adm.model)


class TracedEngine:
    """The engine, with admission and the audit append in spans (children of the request's,
    made after the call, with its start time: one span object, its attributes set once)."""

    def __init__(self, engine: _core.Engine, tracer: trace.Tracer) -> None:
        self._engine = engine
        self._tracer = tracer

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    def admit(self, **kwargs) -> _core.Admission:
        started = time.time_ns()
        adm = self._engine.admit(**kwargs)
        spans = _current.get()
        if spans is None:
            return adm
        spans.admission = adm
        v = adm.versions
        attributes = {
            "gatewayd.policy.version": v.policy,
            "gatewayd.routing.version": v.routing,
            "gatewayd.config.version": v.config,
            "gatewayd.tenant": kwargs["tenant"],
            "gatewayd.request_id": adm.request_id,
            "gatewayd.verdict": adm.verdict,
            "gatewayd.cache": adm.cache,
            "gen_ai.request.model": adm.model,
        }
        if adm.rule:
            attributes["gatewayd.rule"] = adm.rule
        self._tracer.start_span(
            "gatewayd.admit", context=spans.context, attributes=attributes, start_time=started
        ).end()
        return adm

    def record(self, adm: _core.Admission, **kwargs) -> tuple[int, float | None]:
        spans = _current.get()
        if spans is None:
            return self._engine.record(adm, **kwargs)
        spans.end_upstream()  # recorded: its answer was read, its stream ended
        if kwargs.get("failovers"):
            spans.server.set_attribute("gatewayd.failovers", len(kwargs["failovers"]))
        return self._appended(spans, lambda: self._engine.record(adm, **kwargs))

    def record_hit(self, adm: _core.Admission, key: str) -> int:
        spans = _current.get()
        if spans is None:
            return self._engine.record_hit(adm, key)
        return self._appended(spans, lambda: (self._engine.record_hit(adm, key), None))[0]

    def _appended(self, spans, append: Callable[[], tuple[int, float | None]]) -> tuple[int, float | None]:
        """Runs the engine's `append` under a `gatewayd.audit.append` span (its seq, or its error)."""
        started = time.time_ns()
        try:
            seq, cost = append()
        except _core.AuditError as exc:
            span = self._tracer.start_span("gatewayd.audit.append", context=spans.context, start_time=started)
            span.record_exception(exc)
            span.set_status(StatusCode.ERROR, type(exc).__name__)
            span.end()
            raise
        self._tracer.start_span(
            "gatewayd.audit.append", context=spans.context, attributes={"gatewayd.audit.seq": seq}, start_time=started
        ).end()
        return seq, cost
