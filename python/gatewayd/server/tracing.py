"""Whether this worker traces, and its tracer provider when it does ([tracing] in the server
TOML, or the standard OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT).

The OpenTelemetry SDK is the optional `gatewayd[otel]` extra: it is imported only when
tracing is configured, so a gateway without it pays nothing, not even the import. The spans
themselves are made by gatewayd.server.traced.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gatewayd import __version__
from gatewayd.config import ConfigError, Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

ENV_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
INSTALL = "pip install 'gatewayd[otel]'"


def configured_by(settings: Settings, environ: Mapping[str, str] | None = None) -> str | None:
    """What turns tracing on (the config field or the variable), or None: off."""
    environ = os.environ if environ is None else environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if settings.tracing.endpoint:
        return "tracing.endpoint"
    return next((name for name in ENV_ENDPOINTS if environ.get(name)), None)


def check(settings: Settings, label: str = "config") -> None:
    """Refuses to start with tracing configured and the SDK missing: one line naming what
    turned it on."""
    by = configured_by(settings)
    if by is None:
        return
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"{label}: {by}: tracing is configured but the OpenTelemetry SDK is not installed ({INSTALL})"
        ) from None


def traces_url(endpoint: str) -> str:
    """A bare collector URL (http://collector:4318) gets OTLP's traces path, as the SDK does
    for OTEL_EXPORTER_OTLP_ENDPOINT; a URL with a path is used as it is."""
    return endpoint.rstrip("/") + "/v1/traces" if urlsplit(endpoint).path in ("", "/") else endpoint


def start(settings: Settings, replica: str) -> TracerProvider | None:
    """This worker's tracer provider, exporting in batches from a thread of its own; None
    when tracing is off."""
    if configured_by(settings) is None:
        return None
    check(settings)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    t = settings.tracing
    # Without an endpoint the exporter reads the OTEL_EXPORTER_OTLP_* variables itself.
    url = traces_url(t.endpoint) if t.endpoint else None
    exporter = OTLPSpanExporter(endpoint=url, headers=dict(t.headers) or None)
    resource = Resource.create(
        {"service.name": t.service_name, "service.version": __version__, "service.instance.id": replica}
    )
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(t.sample_ratio)))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider
