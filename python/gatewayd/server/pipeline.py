"""The request pipeline: authenticate, admit (policy + routing + cache, one Rust call),
call the upstream (gatewayd.server.forwarding), record (cache fill + audit append and
usage, one Rust call), answer.

Every request is served from the one snapshot it takes when it starts (ROLLBACK.md R6):
its rate limit, admission, cache use and audit settings all read that snapshot, which its
admission carries to the end. Its record reaches the audit chain before its response
completes.
"""

from __future__ import annotations

import logging
import time
from asyncio import CancelledError
from collections.abc import Awaitable
from time import perf_counter

import msgspec

from gatewayd import _core
from gatewayd.audit.sync import SYNCED_BEFORE_ANSWER
from gatewayd.control.keys import model_allowed
from gatewayd.control.snapshot import InService, Served
from gatewayd.server import errors, usage
from gatewayd.server.answers import scrubber
from gatewayd.server.asgi import (
    JSON,
    BodyTimeout,
    BodyTooLarge,
    ClientGone,
    ClientWatch,
    Receive,
    Send,
    read_body,
    request_task,
    respond,
    transfer_coding_problem,
)
from gatewayd.server.auth import Authenticator, Caller
from gatewayd.server.budgets import BudgetLedger, budgets_of, charged
from gatewayd.server.forwarding import USAGE_CHUNK_APIS, Forwarding, Via
from gatewayd.server.health import ProviderHealth
from gatewayd.server.mirror import Mirror
from gatewayd.server.ratelimit import TenantLimiter, key_bucket, key_limit
from gatewayd.server.request_headers import cache_mode, scan
from gatewayd.server.stream_relay import StreamRelay
from gatewayd.upstream import UpstreamClient
from gatewayd.upstream.providers import ProviderEndpoint

log = logging.getLogger("gatewayd.pipeline")
# The record of a request whose client hung up while it was upstream (ClientWatch).
STOPPED_UPSTREAM = (
    "client closed the connection while the request was upstream; the provider's request was stopped "
    "(usage estimated from the body's size)"
)


class AuditUnavailable(Exception):
    """The request's record could not be written and config says fail closed: nothing is
    served unrecorded."""


class Pipeline(Forwarding):
    def __init__(
        self,
        engine,
        agent,
        auth: Authenticator,
        client: UpstreamClient,
        providers,
        max_body: int,
        audit,
        in_service: InService | None = None,
        budgets: BudgetLedger | None = None,
    ):
        self.engine = engine
        self.audit = audit  # gatewayd.audit.runtime.AuditRuntime
        self.agent = agent
        # The version sets the replica serves, moved at each swap: streams watch theirs (R6).
        self.in_service = in_service if in_service is not None else InService()
        self.auth = auth
        self.client = client
        self.providers: dict[str, ProviderEndpoint] = providers
        self.max_body = max_body
        self.limiter = TenantLimiter()
        self.health = ProviderHealth()
        self._scrub = scrubber(secret for provider in providers.values() for secret in provider.secrets)
        self.unrecorded = 0  # requests served without a record under audit.on_failure = open
        self.audit_write_failures = 0  # records that could not be written, in either mode
        self.clients: dict[object, ClientWatch] = {}  # admission -> its client, while forwarded
        self.callers: dict[object, Caller] = {}  # admission -> who sent it, until it is recorded
        self.budgets = budgets  # per key and tenant, shared by the cluster
        # Copies of requests for a shadow routing candidate (R13).
        self.streams = StreamRelay(self._record, self.in_service)
        self.mirror = Mirror(engine, client, providers, lambda fields: engine.event(msgspec.json.encode(fields)))

    async def handle(self, scope: dict, receive: Receive, send: Send, api: str) -> None:
        snap = self.agent.snapshot  # R6: this request's one snapshot, whatever flips meanwhile
        arrived = perf_counter()  # its record dates the request from here (ROLLBACK.md R6)
        seen = scan(scope["headers"], self.auth.keys)  # and who the credential names
        anthropic = api == "messages"
        if seen.transfer_encoding is not None:
            problem = transfer_coding_problem(seen.transfer_encoding)
            if problem is not None:  # refused as the server would, before anything else
                status, message = problem
                body = errors.error_body(status, message, "invalid_transfer_encoding", anthropic)
                return await respond(send, status, [(b"content-type", JSON)], body)
        request_id = seen.request_id  # the caller's when sane (so traces join up), else a fresh one
        caller = seen.caller
        if caller is None:
            served = snap.route("", api).current()
            return await self._reject(
                served, send, api, "", request_id, 401, "invalid_api_key", "invalid or missing API key", arrived=arrived
            )
        tenant = caller.tenant
        route = snap.route(tenant, api)
        try:
            body = await read_body(receive, self.max_body, seen.content_length)
        except (BodyTooLarge, BodyTimeout, ClientGone) as exc:  # audited too: nothing reached a provider
            status, code, message = self._unread(exc)
            return await self._reject(
                route.current(), send, api, tenant, request_id, status, code, message, caller=caller, arrived=arrived
            )
        # A canary splits traffic by caller (R13): only then is the sticky bucket computed.
        if route.split:
            bucket = _core.sticky_bucket(api=api, sticky=seen.sticky, body=body, key=seen.key or "")
            served = route.serve(bucket)
        else:
            served = route.serve(0)
        config = served.config
        wait = self.limiter.admit(tenant, config.rate_limit, self.agent.live_replicas)
        by_key = not wait and caller.rpm  # a run-time key's own limit, beside its tenant's
        if by_key:
            limit = key_limit(caller.rpm, config.rate_limit.scope)
            wait = self.limiter.admit(key_bucket(caller.key), limit, self.agent.live_replicas)
        if wait:
            limited = f"key {caller.key} ({caller.rpm}/min)" if by_key else f"tenant {tenant}"
            message = f"rate limit for {limited} exceeded; retry in {wait:.1f} s"
            retry = [(b"retry-after", str(max(1, round(wait))).encode())]
            return await self._reject(
                served,
                send,
                api,
                tenant,
                request_id,
                429,
                "rate_limit_exceeded",
                message,
                retry,
                caller=caller,
                arrived=arrived,
            )
        adm = self.engine.admit(
            served=served,
            api=api,
            tenant=tenant,
            request_id=request_id,
            headers=scope["headers"],
            body=body,
            cache=cache_mode(seen.cache, config.cache),
            vary=seen.vary,
            waited_s=perf_counter() - arrived,
        )
        if caller.models and adm.verdict == "allow" and not model_allowed(caller.models, adm.model):
            message = f"key {caller.key} may not use the model `{adm.model}` (it may use {', '.join(caller.models)})"
            return await self._reject(
                served, send, api, tenant, request_id, 403, "model_not_allowed", message, caller=caller, arrived=arrived
            )
        verdict = adm.verdict
        if verdict == "allow" and adm.cached_body is not None:  # its record takes the key itself
            return await self._answer_from_cache(send, adm, caller.key)
        self.callers[adm] = caller
        try:
            if verdict != "allow":
                return await self._refuse(send, adm, anthropic)
            if self.budgets is not None and (caller.budget is not None or config.budgets):
                spent = self.budgets.check(budgets_of(caller, config), time.time())
                if spent is not None:  # would start after its budget is spent: nothing goes upstream
                    return await self._over_budget(send, adm, spent, anthropic)
            self.clients[adm] = client = ClientWatch(receive, request_task())
            try:
                answer = await self._forward(scope, send, adm, config, anthropic, client)
            except CancelledError:
                if not client.stopped():
                    raise
                answer = None
                if client.armed:  # not recorded yet: the hang-up stopped the request upstream
                    counts = usage.stopped_counts(None, len(adm.body), 0)[0]
                    await self._record(adm, 499, error=STOPPED_UPSTREAM, via=client.via, counts=counts)
            finally:
                del self.clients[adm]
                client.close()
        finally:
            del self.callers[adm]
        if served.mirror is not None:
            self.mirror.copy(served, api, tenant, request_id, body, answer)

    def _unread(self, exc: Exception) -> tuple[int, str, str]:
        """The (status, code, message) of a request whose body could not be read."""
        if isinstance(exc, BodyTooLarge):
            return 413, "request_too_large", f"request body exceeds the limit of {self.max_body} bytes"
        if isinstance(exc, BodyTimeout):
            message = "the request body stalled (server.body_idle_timeout_s / server.body_timeout_s)"
            return 408, "request_timeout", message
        return 499, "client_closed_request", "client closed the connection before its body was read"

    async def _over_budget(self, send: Send, adm, spent, anthropic: bool) -> None:
        """429 `budget_exceeded` in the API's error shape, naming the budget and its reset."""
        message = spent.message(adm.served.config.prices.currency)
        retry = [(b"retry-after", str(max(1, int(spent.resets_at - time.time()))).encode())]
        await self._record(adm, 429, error=message)
        body = errors.error_body(429, message, "budget_exceeded", anthropic)
        await respond(send, 429, adm.answer_headers(JSON, retry), body)

    def _answer_from_cache(self, send: Send, adm, key: str) -> Awaitable[None]:
        """A hit records the tokens it saved (kept with the answer when it was cached); a
        streamed OpenAI answer stored with its usage chunk loses it for a client that did
        not ask for it. Nothing was forwarded (no client watch) and nothing is charged, so
        the record is the engine's one `record_hit` call. Returns the answer to be awaited:
        a coroutine frame less per hit."""
        body, status = adm.cached_body, adm.cached_status
        if adm.stream and adm.api in USAGE_CHUNK_APIS and not usage.client_asked(adm.body):
            body = usage.strip_usage_events(body)
        try:
            seq = self.engine.record_hit(adm, key)
        except _core.AuditError as exc:
            self._unrecorded(adm, exc)
        else:
            audit = adm.served.config.audit
            if audit.fsync in SYNCED_BEFORE_ANSWER:
                return self._answer_when_durable(send, seq, audit.fsync, status, adm.answer_headers(), body)
        return respond(send, status, adm.answer_headers(), body)

    async def _answer_when_durable(self, send: Send, seq: int, fsync: str, status: int, headers, body: bytes) -> None:
        """The answer, once record `seq` is on disk (`fsync` is group or always)."""
        await self.audit.durable(seq, fsync)
        await respond(send, status, headers, body)

    async def _reject(
        self,
        served: Served,
        send: Send,
        api: str,
        tenant: str,
        request_id: str,
        status: int,
        code: str,
        message: str,
        extra=(),
        caller: Caller | None = None,
        arrived: float | None = None,
    ) -> None:
        """Refused before admission (no key, body too large): still audited, under what the
        request is served under, and dated from when it `arrived` (perf_counter)."""
        adm = self.engine.reject(
            served=served,
            api=api,
            tenant=tenant,
            request_id=request_id,
            status=status,
            code=code,
            message=message,
            waited_s=0.0 if arrived is None else perf_counter() - arrived,
        )
        if caller is None:
            return await self._refuse(send, adm, api == "messages", extra)
        self.callers[adm] = caller
        try:
            await self._refuse(send, adm, api == "messages", extra)
        finally:
            del self.callers[adm]

    async def _refuse(self, send: Send, adm, anthropic: bool, extra=()) -> None:
        await self._record(adm, adm.status, error=adm.message)
        body = errors.error_body(adm.status, adm.message, adm.code, anthropic)
        await respond(send, adm.status, adm.answer_headers(JSON, extra), body)

    async def _record(
        self,
        adm: _core.Admission,
        status: int,
        *,
        error: str | None = None,
        response: bytes | None = None,
        response_sha256: str | None = None,
        cache_ttl_s: float = 0.0,
        via: Via = (0, None, None),
        inflight: _core.Inflight | None = None,
        reverted_by: int | None = None,
        delivered: bool = False,
        counts: usage.Counts | None = None,
    ) -> None:
        """Appends the request's audit record (written before this returns) and, when the
        request's config syncs before answering (`group`, `always`), waits until it is on
        disk: the response completes after. ``via`` is (which upstream answered, what
        failed before it); ``delivered``: the client has the whole answer already, so its
        hanging up is no 499. ``counts``: the tokens the provider reported, priced by the
        engine under the request's config version (a cache hit's is `_answer_from_cache`'s)."""
        served = adm.served
        audit = served.config.audit
        caller = self.callers.get(adm)
        client = self.clients.get(adm)
        if client is not None:
            client.armed = False  # recorded now: a hang-up from here on stops nothing
            if status != 499 and not delivered and client.gone():  # as nginx logs it: nobody got the answer
                error = f"client closed the connection before its {status} answer" + (f" ({error})" if error else "")
                status = 499
        try:
            seq, cost = self.engine.record(
                adm,
                status=status,
                error=error,
                response=response,
                response_sha256=response_sha256,
                cache_ttl_s=cache_ttl_s,
                upstream=via[0],
                failovers=via[1] or [],
                inflight=inflight,
                reverted_by=reverted_by or 0,
                upstream_api=via[2],
                key=caller.key if caller is not None else None,
                counts=counts,
            )
        except _core.AuditError as exc:
            return self._unrecorded(adm, exc)
        if counts is not None and caller is not None and self.budgets is not None:
            owners = charged(caller, served.config)
            if owners:
                self.budgets.charge(owners, cost or 0.0, counts.prompt + counts.completion, time.time())
        if audit.fsync in SYNCED_BEFORE_ANSWER:  # skips the call when nothing waits
            await self.audit.durable(seq, audit.fsync)

    def _unrecorded(self, adm: _core.Admission, exc: _core.AuditError) -> None:
        """A record that could not be written: refused when the request's config fails
        closed (AuditUnavailable, a 503), else served and counted as unrecorded."""
        self.audit_write_failures += 1
        if adm.served.config.audit.on_failure == "closed":
            raise AuditUnavailable(str(exc)) from exc
        self.unrecorded += 1
        log.error("request %s served without an audit record (audit.on_failure = open): %s", adm.request_id, exc)
