"""The request pipeline: authenticate, admit (policy + routing + cache, one Rust call),
call the upstream, record (cache fill + audit append, one Rust call), answer.

Every request is served from the one snapshot it takes when admitted (ROLLBACK.md R6),
and its record reaches the audit chain before its response completes.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from random import getrandbits

from gatewayd.server import errors
from gatewayd.server.asgi import JSON, BodyTimeout, BodyTooLarge, ClientGone, Receive, Send, read_body, respond
from gatewayd.server.auth import Authenticator
from gatewayd.server.health import ProviderHealth
from gatewayd.server.ratelimit import TenantLimiter
from gatewayd.upstream import UpstreamClient, UpstreamError
from gatewayd.upstream.providers import ProviderEndpoint

CACHE_OFF, CACHE_DETERMINISTIC, CACHE_FORCED = 0, 1, 2
SSE = b"text/event-stream"
# Upstream response headers worth passing on; everything else stays behind the gateway.
PASSED_HEADERS = (b"openai-processing-ms", b"anthropic-ratelimit-", b"x-ratelimit-", b"retry-after")
log = logging.getLogger("gatewayd.pipeline")


class AuditUnavailable(Exception):
    """The request's record could not be written and config says fail closed: nothing is
    served unrecorded."""


UPSTREAM_ERROR_STATUS = {"timeout": 504, "unreachable": 502, "protocol": 502}
# Provider answers that send a request on to the next fallback (529: Anthropic overloaded).
FAILOVER_STATUSES = frozenset({429, 500, 502, 503, 504, 529})


class Pipeline:
    def __init__(self, engine, agent, auth: Authenticator, client: UpstreamClient, providers, max_body: int, audit):
        self.engine = engine
        self.audit = audit  # gatewayd.audit.runtime.AuditRuntime
        self.agent = agent
        self.auth = auth
        self.client = client
        self.providers: dict[str, ProviderEndpoint] = providers
        self.max_body = max_body
        self.limiter = TenantLimiter()
        self.health = ProviderHealth()
        self.unrecorded = 0  # requests served without a record under audit.on_failure = open

    async def handle(self, scope: dict, receive: Receive, send: Send, api: str) -> None:
        seen = _scan(scope["headers"])
        request_id = seen.request_id or f"{getrandbits(128):032x}"
        anthropic = api == "messages"
        tenant = self.auth.tenant_for(*seen.credential) if seen.credential else None
        if tenant is None:
            return await self._reject(send, api, "", request_id, 401, "invalid_api_key", "invalid or missing API key")
        wait = self.limiter.admit(tenant, self.agent.snapshot.config.rate_limit, self.agent.live_replicas)
        if wait:
            message = f"rate limit for tenant {tenant} exceeded; retry in {wait:.1f} s"
            retry = [(b"retry-after", str(max(1, round(wait))).encode())]
            return await self._reject(send, api, tenant, request_id, 429, "rate_limit_exceeded", message, retry)
        try:
            body = await read_body(receive, self.max_body, seen.content_length)
        except BodyTooLarge:
            message = f"request body exceeds the limit of {self.max_body} bytes"
            return await self._reject(send, api, tenant, request_id, 413, "request_too_large", message)
        except BodyTimeout:
            message = "the request body stalled (server.body_idle_timeout_s / server.body_timeout_s)"
            return await self._reject(send, api, tenant, request_id, 408, "request_timeout", message)
        except ClientGone:
            return
        # R6: the request's one snapshot, taken as it is admitted (no await between this
        # and admission) and kept to its end.
        snap = self.agent.snapshot
        policy_version, policy = snap.policy_for(tenant, api)
        adm = self.engine.admit(
            policy,
            policy_version,
            snap.shadow,
            snap.routing,
            snap.routing_version,
            snap.config_version,
            api,
            tenant,
            request_id,
            _policy_headers(scope, policy),
            body,
            _cache_mode(seen.cache, snap.config.cache),
        )
        if adm.verdict != "allow":
            return await self._refuse(send, adm, anthropic)
        if adm.cached_body is not None:
            await self._record(adm, adm.cached_status, None, None, None, 0.0)
            content_type = adm.cached_content_type.encode()
            return await respond(send, adm.cached_status, _headers(adm, content_type), adm.cached_body)
        await self._forward(scope, send, adm, snap.config, anthropic)

    async def _forward(self, scope, send: Send, adm, config, anthropic: bool) -> None:
        upstream, via = await self._first_answer(scope, adm, config)
        # A stand-in's answer (maybe another model's) is not kept for later requests.
        ttl = config.cache.ttl_s if config.cache.enabled and not via[0] else 0.0
        if isinstance(upstream, UpstreamError):
            return await self._upstream_failed(send, adm, upstream, anthropic, via)
        try:
            passed = [(k, v) for k, v in upstream.headers if k.startswith(PASSED_HEADERS)]
            content_type = _content_type(upstream.headers)
            if upstream.status != 200 or not content_type.startswith(SSE):
                payload = await upstream.read()
                await self._record(adm, upstream.status, None, payload, None, ttl, via)
                return await respond(send, upstream.status, _headers(adm, content_type, passed), payload)
            await self._stream(send, adm, upstream, passed, ttl, anthropic, via)
        except UpstreamError as exc:
            return await self._upstream_failed(send, adm, exc, anthropic, via)
        finally:
            await upstream.aclose()

    async def _first_answer(self, scope, adm, config):
        """The provider's response, else each fallback's in turn while they fail the request
        before answering (unreachable, timed out, a 429/5xx status; skipped while ejected):
        nothing has been relayed yet, so the client sees only the upstream that answered,
        or the last failure. Returns it (a response or an UpstreamError) and ``via``:
        (which upstream it is, 0 the provider; what failed before it)."""
        health = self.health
        name, body, tried, alternatives = adm.provider, adm.body, 0, None
        failovers: list[str] = []
        while True:
            if health.available(name, time.monotonic()) or _last(adm, tried, alternatives):
                upstream = await self._call(scope, name, adm, body, config)
                failure = _failure(upstream)
                if failure is None:
                    health.succeeded(name)
                    return upstream, (tried, failovers)
                if health.failed(name, time.monotonic(), config.ejection):
                    log.warning("provider %s ejected for %ss after %s", name, config.ejection.for_s, failure)
            else:
                upstream, failure = None, "ejected"  # failing lately: straight to the next
            if alternatives is None:
                alternatives = adm.fallbacks
            if tried == len(alternatives):
                return upstream, (tried, failovers)  # no fallback left: the last failure stands
            if upstream is not None and not isinstance(upstream, UpstreamError):
                await upstream.aclose()
            failovers.append(f"{name}: {failure}")
            name, body = alternatives[tried]
            tried += 1

    async def _call(self, scope, name: str, adm, body: bytes, config):
        """One provider's response, or the UpstreamError it failed with."""
        provider = self.providers[name]
        url, headers = provider.url(adm.api), provider.headers(scope["headers"])
        for attempt in range(config.retries + 1):
            try:
                return await self.client.send(
                    "POST", url, headers, body, config.upstream_timeout_s, stream=adm.stream
                )
            except UpstreamError as exc:
                # Only a refused connection is retried: nothing reached the provider, so a
                # retry cannot run the same completion twice. Backing off exponentially
                # gives a provider that is restarting time to come back.
                if exc.kind != "unreachable" or attempt == config.retries:
                    return exc
                await asyncio.sleep(config.retry_backoff_ms / 1000 * 2**attempt)

    async def _stream(self, send: Send, adm, upstream, passed, ttl: float, anthropic: bool, via) -> None:
        """Passes SSE through chunk by chunk; a broken upstream ends the stream with an error event."""
        await send({"type": "http.response.start", "status": 200, "headers": _headers(adm, SSE, passed)})
        digest = hashlib.sha256()
        kept: list[bytes] | None = [] if adm.cache_key else None
        error = None
        try:
            async for chunk in upstream.chunks():
                digest.update(chunk)
                if kept is not None:
                    kept.append(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamError as exc:
            error = exc
        if error is None:
            full = b"".join(kept) if kept is not None else None
            await self._record(adm, 200, None, full, digest.hexdigest(), ttl, via)
            return await send({"type": "http.response.body", "body": b""})
        status = UPSTREAM_ERROR_STATUS.get(error.kind, 502)
        message = f"upstream stream broke off: {error}"
        await self._record(adm, status, f"{error.kind}: {error}", None, digest.hexdigest(), 0.0, via)
        event = errors.sse_error_event(status, message, "upstream_" + error.kind, anthropic)
        await send({"type": "http.response.body", "body": event})

    async def _upstream_failed(self, send: Send, adm, exc: UpstreamError, anthropic: bool, via) -> None:
        status = UPSTREAM_ERROR_STATUS.get(exc.kind, 502)
        what = "timed out" if exc.kind == "timeout" else "failed"
        tried, failovers = via
        name = adm.provider if tried == 0 else adm.fallbacks[tried - 1][0]
        message = f"upstream {name} {what}: {exc}"
        if failovers:
            message += f" (after {'; '.join(failovers)})"
        await self._record(adm, status, f"{exc.kind}: {exc}", None, None, 0.0, via)
        body = errors.error_body(status, message, "upstream_" + exc.kind, anthropic)
        await respond(send, status, _headers(adm, JSON), body)

    async def _reject(
        self, send: Send, api: str, tenant: str, request_id: str, status: int, code: str, message: str, extra=()
    ) -> None:
        """Refused before admission (no key, body too large): still audited, under the
        versions in effect right now."""
        snap = self.agent.snapshot
        versions = (snap.policy_for(tenant, api)[0], snap.routing_version, snap.config_version)
        adm = self.engine.reject(api, tenant, request_id, status, code, message, versions)
        await self._refuse(send, adm, api == "messages", extra)

    async def _refuse(self, send: Send, adm, anthropic: bool, extra=()) -> None:
        await self._record(adm, adm.status, adm.message, None, None, 0.0)
        body = errors.error_body(adm.status, adm.message, adm.code, anthropic)
        await respond(send, adm.status, _headers(adm, JSON, extra), body)


    async def _record(
        self, adm, status: int, error, response, response_sha256, cache_ttl_s: float, via=(0, None)
    ) -> None:
        """Appends the request's audit record (written before this returns) and, under the
        `group` fsync policy, waits until it is on disk: the response completes after.
        ``via`` is (which upstream answered, what failed before it)."""
        audit = self.agent.snapshot.config.audit
        try:
            if via[1]:
                seq = self.engine.record(adm, status, error, response, response_sha256, cache_ttl_s, *via)
            else:
                seq = self.engine.record(adm, status, error, response, response_sha256, cache_ttl_s)
        except OSError as exc:
            if audit.on_failure == "closed":
                raise AuditUnavailable(str(exc)) from exc
            self.unrecorded += 1
            log.error("request %s served without an audit record (audit.on_failure = open): %s", adm.request_id, exc)
            return
        if audit.fsync == "group":  # the engine's policy is set from this same snapshot at each swap
            await self.audit.durable(seq)


def _headers(adm, content_type: bytes, extra: list[tuple[bytes, bytes]] = ()) -> list[tuple[bytes, bytes]]:
    """R3: every response names the versions it was served under."""
    return [
        (b"content-type", content_type),
        (b"x-request-id", adm.request_id.encode()),
        *_version_headers(adm.versions),
        (b"x-gatewayd-cache", adm.cache.encode()),
        *extra,
    ]


@functools.lru_cache(maxsize=64)
def _version_headers(versions: tuple[int, int, int]) -> tuple[tuple[bytes, bytes], ...]:
    """Encoded once per version set: a replica serves one or two at a time."""
    p, r, c = versions
    return (
        (b"x-gatewayd-policy-version", str(p).encode()),
        (b"x-gatewayd-routing-version", str(r).encode()),
        (b"x-gatewayd-config-version", str(c).encode()),
    )


class _Seen:
    """What the pipeline looks for in the request headers, found in one pass."""

    __slots__ = ("credential", "request_id", "content_length", "cache")

    def __init__(self) -> None:
        self.credential: tuple[bytes, bytes] | None = None
        self.request_id: str | None = None
        self.content_length: int | None = None
        self.cache: bytes | None = None


def _scan(headers: list[tuple[bytes, bytes]]) -> _Seen:
    seen = _Seen()
    for name, value in headers:
        if name == b"authorization" or name == b"x-api-key":
            if seen.credential is None:
                seen.credential = (name, value)
        elif name == b"content-length":
            seen.content_length = int(value) if value.isdigit() else None
        elif name == b"x-request-id":
            # The caller's id when it is sane (so traces join up); else a fresh one from the
            # per-process Mersenne Twister (reseeded at fork): ids must be unique, not secret,
            # and os.urandom is a syscall costing ~8 us here.
            if seen.request_id is None and 0 < len(value) <= 128 and all(32 < c < 127 for c in value):
                seen.request_id = value.decode()
        elif name == b"x-gatewayd-cache":
            seen.cache = value.lower()
    return seen


def _last(adm, tried: int, alternatives) -> bool:
    """Whether the upstream at `tried` is the request's last chance (tried even if ejected)."""
    if alternatives is None:
        return not adm.fallbacks
    return tried == len(alternatives)


def _failure(upstream) -> str | None:
    """Why a provider failed a request before answering it, or None if it answered."""
    if isinstance(upstream, UpstreamError):
        return str(upstream)
    if upstream.status in FAILOVER_STATUSES:
        return f"status {upstream.status}"
    return None


def _content_type(headers: list[tuple[bytes, bytes]]) -> bytes:
    for name, value in headers:
        if name == b"content-type":
            return value
    return JSON


def _policy_headers(scope: dict, policy) -> list[tuple[str, str]]:
    """Only the headers some rule looks at cross into Rust."""
    names = _header_names(policy)
    if not names:
        return []
    return [(k.decode(), v.decode("latin-1")) for k, v in scope["headers"] if k in names]


@functools.lru_cache(maxsize=16)
def _header_names(policy) -> frozenset[bytes]:
    """Once per compiled policy (a replica holds a few), not once per request."""
    return frozenset(name.encode() for name in policy.header_names)


def _cache_mode(asked: bytes | None, cache) -> int:
    """Config decides whether caching may happen; the `x-gatewayd-cache` header can ask
    for it (`use`) or opt out (`bypass`)."""
    if not cache.enabled or cache.mode == "off" or asked == b"bypass":
        return CACHE_OFF
    if asked == b"use":
        return CACHE_FORCED
    return CACHE_DETERMINISTIC if cache.mode == "deterministic" else CACHE_OFF
