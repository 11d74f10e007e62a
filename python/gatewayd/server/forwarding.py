"""What happens to a request that goes upstream, between its admission and its answer:
the provider called (with retries of refused connections), each fallback in turn while
they fail it before answering, the translation to an upstream of the other API, and the
answer relayed (a whole one checked and its usage read, a stream handed to the relay, an
upstream's error in the API's shape) or the failure answered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import msgspec

from gatewayd.server import errors, usage
from gatewayd.server.answers import answering, content_type_of, failure_of, is_error_shaped
from gatewayd.server.asgi import JSON, ClientWatch, Send, respond
from gatewayd.server.failover import Failover
from gatewayd.server.health import ProviderHealth
from gatewayd.server.stream_relay import SSE, UPSTREAM_ERROR_STATUS, StreamRelay
from gatewayd.translate import Untranslatable, translation_for
from gatewayd.upstream import UpstreamClient, UpstreamError
from gatewayd.upstream.providers import ProviderEndpoint

# Upstream response headers worth passing on; everything else stays behind the gateway.
PASSED_HEADERS = (b"openai-processing-ms", b"anthropic-ratelimit-", b"x-ratelimit-", b"retry-after")
PASSED_FIRST = frozenset(name[:1] for name in PASSED_HEADERS)  # most names are passed over on their first byte
# Streamed OpenAI APIs the gateway asks for a usage chunk (stream_options.include_usage).
USAGE_CHUNK_APIS = frozenset({"chat", "completions"})
ERROR_EXCERPT = 200  # bytes of an upstream's unshaped error body quoted in the wrapped one
# Which upstream answered (0 the provider, n its nth fallback), what failed before it, and
# the API it was spoken to in when that is not the request's (it was translated).
Via = tuple[int, list[str] | None, str | None]
log = logging.getLogger("gatewayd.pipeline")


class Forwarding:
    """The pipeline's upstream half (gatewayd.server.pipeline.Pipeline is one)."""

    providers: dict[str, ProviderEndpoint]
    health: ProviderHealth
    client: UpstreamClient
    streams: StreamRelay
    _scrub: Callable[[bytes], bytes]
    _record: Callable[..., Awaitable[None]]  # the request's audit record: Pipeline._record

    async def _forward(
        self, scope, send: Send, adm, config, anthropic: bool, client: ClientWatch | None = None
    ) -> bytes | None:
        """Answers from upstream; returns the answer when it is a whole JSON one. `client`
        (a ClientWatch) learns which upstream is being called, for the record of a request
        whose client hangs up meanwhile."""
        # A streamed OpenAI request: whether the client asked for the usage chunk (if not,
        # an OpenAI provider is asked for it, and it is stripped from the stream).
        asked = usage.client_asked(adm.body) if adm.stream and adm.api in USAGE_CHUNK_APIS else None
        upstream, via, translation = await self._first_answer(scope, adm, config, asked, client)
        # A stand-in's answer (maybe another model's) is not kept for later requests.
        ttl = config.cache.ttl_s if config.cache.enabled and not via[0] else 0.0
        if isinstance(upstream, Untranslatable):
            await self._untranslatable(send, adm, upstream, anthropic, via)
            return None
        if isinstance(upstream, UpstreamError):
            await self._upstream_failed(send, adm, upstream, anthropic, via)
            return None
        try:
            passed = [(k, v) for k, v in upstream.headers if k[:1] in PASSED_FIRST and k.startswith(PASSED_HEADERS)]
            content_type = content_type_of(upstream.headers)
            status = upstream.status
            protocol = self.providers[answering(adm, via)].kind == "anthropic"  # of the answer's usage
            if status == 200 and content_type.startswith(SSE):
                strip = asked is False and translation is None and not protocol
                await self.streams.relay(send, adm, upstream, passed, ttl, anthropic, via, translation, strip, client)
                return None
            raw = payload = await upstream.read()  # raw: the provider's own answer
            if status >= 400:
                await self._relay_error(
                    send, adm, status, content_type, payload, passed, anthropic, via, translation, protocol
                )
                return None
            is_object, counts = usage.read_answer(payload, protocol) if status == 200 else (False, None)
            if not is_object:
                what = "a body that is not a JSON object" if status == 200 else f"status {status}, not an API answer"
                invalid = UpstreamError("protocol", f"answered {what}")
                await self._upstream_failed(send, adm, invalid, anthropic, via, "upstream_invalid_response")
                return None
            if translation is not None:
                try:
                    payload = translation.response(raw)
                except msgspec.DecodeError as exc:
                    what = f"what is not a {translation.upstream_api} answer: {exc}"
                    invalid = UpstreamError("protocol", f"answered {what}")
                    await self._upstream_failed(send, adm, invalid, anthropic, via, "upstream_invalid_response")
                    return None
                content_type = JSON
            await self._record(adm, 200, response=payload, cache_ttl_s=ttl, via=via, counts=counts)
            await respond(send, 200, adm.answer_headers(content_type, passed), payload)
            return payload
        except UpstreamError as exc:
            await self._upstream_failed(send, adm, exc, anthropic, via)
            return None
        finally:
            await upstream.aclose()

    async def _relay_error(
        self, send: Send, adm, status: int, content_type, payload, passed, anthropic, via, translation, protocol: bool
    ) -> None:
        """An upstream's own error keeps its status; its body reaches the client without our
        provider keys in it, and in the API's error shape (translated from the upstream's, or
        wrapped, when it is not). What the provider says it charged, if anything, is
        recorded."""
        counts = usage.read_error(payload, protocol)
        payload = self._scrub(payload)
        mapped = translation.error(status, payload) if translation is not None else None
        if mapped is not None:
            (status, payload), content_type = mapped, JSON
        elif not is_error_shaped(payload, anthropic):
            quoted = payload[:ERROR_EXCERPT].decode(errors="replace").strip()
            said = f": {quoted}" if quoted else " with an empty body"
            message = f"upstream {answering(adm, via)} answered {status}{said}"
            payload, content_type = errors.error_body(status, message, "upstream_error", anthropic), JSON
        await self._record(adm, status, response=payload, via=via, counts=counts)
        await respond(send, status, adm.answer_headers(content_type, passed), payload)

    async def _first_answer(self, scope, adm, config, asked: bool | None = None, client: ClientWatch | None = None):
        """The provider's response, else each fallback's in turn while they fail the request
        before answering (unreachable, timed out, a 429/5xx status; skipped while ejected):
        nothing has been relayed yet, so the client sees only the upstream that answered,
        or the last failure. Returns it (a response, an UpstreamError, or Untranslatable when
        the last upstream could not take the request), ``via`` (see Via) and the
        Translation to the upstream's API, if the request needed one (issue 14)."""
        health = self.health
        route = Failover(adm)
        while True:
            name, body = route.upstream(health, time.monotonic())  # an ejected one is passed over
            translation = translation_for(adm.api, self.providers[name].kind)
            upstream_api = None
            if translation is not None:
                upstream_api = translation.upstream_api
                try:
                    body = translation.request(body)
                except Untranslatable as exc:  # this upstream cannot take it; it did not fail
                    if not route.failed(f"cannot translate: {exc}"):
                        return exc, (*route.via, upstream_api), translation
                    continue
            elif asked is False and self.providers[name].kind == "openai":
                body = usage.ask_for_usage(body)[0]  # stripped again: the client did not ask
            via = (*route.via, upstream_api)
            if client is not None:
                client.via = via
            upstream = await self._call(scope, name, upstream_api or adm.api, adm.stream, body, config)
            failure = failure_of(upstream)
            if failure is None:
                health.succeeded(name)
                return upstream, via, translation
            if health.failed(name, time.monotonic(), config.ejection):
                log.warning("provider %s ejected for %ss after %s", name, config.ejection.for_s, failure)
            if not route.failed(failure):
                return upstream, via, translation  # no fallback left: the last failure stands
            if not isinstance(upstream, UpstreamError):
                await upstream.aclose()

    async def _call(self, scope, name: str, api: str, stream: bool, body: bytes, config):
        """One provider's response, or the UpstreamError it failed with."""
        provider = self.providers[name]
        url, headers = provider.url(api), provider.headers(scope["headers"])
        for attempt in range(config.retries + 1):
            try:
                return await self.client.send("POST", url, headers, body, config.upstream_timeout_s, stream=stream)
            except UpstreamError as exc:
                # Only a refused connection is retried: nothing reached the provider, so a
                # retry cannot run the same completion twice. Backing off exponentially
                # gives a provider that is restarting time to come back.
                if exc.kind != "unreachable" or attempt == config.retries:
                    return exc
                await asyncio.sleep(config.retry_backoff_ms / 1000 * 2**attempt)

    async def _untranslatable(self, send: Send, adm, exc: Untranslatable, anthropic: bool, via: Via) -> None:
        """A field no upstream of the request could take: a 400 naming it, never dropped."""
        message = f"{exc} (model {adm.model} is served by {answering(adm, via)}, which speaks the {via[2]} API)"
        await self._record(adm, 400, error=message, via=via)
        body = errors.error_body(400, message, "untranslatable_field", anthropic, param=exc.field)
        await respond(send, 400, adm.answer_headers(JSON), body)

    async def _upstream_failed(self, send: Send, adm, exc: UpstreamError, anthropic: bool, via, code=None) -> None:
        status = UPSTREAM_ERROR_STATUS.get(exc.kind, 502)
        what = "timed out" if exc.kind == "timeout" else "failed"
        failovers = via[1]
        message = f"upstream {answering(adm, via)} {what}: {exc}"
        if failovers:
            message += f" (after {'; '.join(failovers)})"
        await self._record(adm, status, error=f"{exc.kind}: {exc}", via=via)
        body = errors.error_body(status, message, code or "upstream_" + exc.kind, anthropic)
        await respond(send, status, adm.answer_headers(JSON), body)
