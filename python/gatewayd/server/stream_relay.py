"""Relaying an upstream's server-sent events to the client: chunk by chunk (translated
event by event when the request needed a translation), ending with an error event when the
stream breaks off or ends early, and cut at the next chunk when its versions leave service
under `inflight_on_revert: cut` (ROLLBACK.md R6)."""

from __future__ import annotations

import hashlib
from asyncio import CancelledError
from collections.abc import Awaitable, Callable

from gatewayd import _core
from gatewayd.control.snapshot import InService
from gatewayd.server import errors, usage
from gatewayd.server.answers import ends_with_last_event
from gatewayd.server.asgi import ClientWatch, Send
from gatewayd.translate import Translation
from gatewayd.upstream import UpstreamError

SSE = b"text/event-stream"
UPSTREAM_ERROR_STATUS = {"timeout": 504, "unreachable": 502, "protocol": 502}
# A stream is complete only if its protocol's last event ends it (ends_with_last_event):
# OpenAI's (chat, completions), or Anthropic's (messages).
LAST_EVENT = {False: "data: [DONE]", True: "event: message_stop"}
# The stream's last bytes kept to look for it (52 bytes for Anthropic's) and for the usage
# the provider sends last (OpenAI's usage chunk, Anthropic's message_delta).
STREAM_TAIL = usage.STREAM_TAIL
# The status whose error type ends a stream cut on a revert: api_error, in both APIs.
CUT_ON_REVERT_STATUS = 502


class StreamRelay:
    """Relays streamed answers; `record` is the pipeline's (audit record, cache fill, usage)."""

    def __init__(self, record: Callable[..., Awaitable[None]], in_service: InService):
        self.record = record
        self.in_service = in_service  # the version sets in service, moved at each swap

    async def relay(
        self,
        send: Send,
        adm,
        upstream,
        passed,
        ttl: float,
        anthropic: bool,
        via,
        translation: Translation | None,
        strip: bool = False,
        client: ClientWatch | None = None,
    ) -> None:
        """Passes SSE through chunk by chunk (translated event by event into the caller's
        protocol, with a translation); a stream that breaks off, or ends before its
        protocol's last event, ends with an error event instead.

        A stream whose version set leaves service while it is relayed (R6) goes on to its
        end under `inflight_on_revert: finish`, and its record says it finished after the
        revert; under `cut` (in the config it was admitted under) it is cut at its next
        chunk: the upstream is closed, the client gets the same error event, and the
        record says it was cut. Per chunk this costs one int comparison.

        Usage is read once, at the end, from the stream's first and last bytes (`protocol`:
        whether the provider speaks Anthropic's). With `strip`, the usage chunk the gateway
        asked an OpenAI provider for is stripped: the client did not ask for it.

        A client that hangs up (`client`, its ClientWatch, cancels the request) stops the
        stream: the upstream connection is closed, so the provider stops generating, and
        the record (499) keeps the digest of what was relayed until then."""
        await send({"type": "http.response.start", "status": 200, "headers": adm.answer_headers(SSE, passed)})
        digest = hashlib.sha256()
        kept: list[bytes] | None = [] if adm.cache_key else None
        tail = b"\n"  # the stream's last STREAM_TAIL bytes (all of it, after a line start, until then)
        error = None
        relayed = events = 0  # bytes sent to the client, and content events among them
        watch, versions = self.in_service, adm.served.versions
        # The swaps seen, and the change after which this stream's versions left service.
        seen, reverted_by = watch.left_service(versions)
        cut = adm.served.config.inflight_on_revert == "cut"
        translator = translation.stream() if translation is not None else None
        upstream_anthropic = anthropic if translation is None else translation.upstream_api == "messages"
        head = b"" if upstream_anthropic else None  # the stream's first bytes, for message_start
        content_event = usage.CONTENT_EVENT[anthropic]  # counted in what the client is sent
        stripper = usage.UsageStripper() if strip else None
        try:
            if not (cut and reverted_by is not None):
                async for chunk in upstream.chunks():
                    if watch.generation != seen:  # a swap since the last chunk: is this set still served?
                        seen, left = watch.left_service(versions)
                        if reverted_by is None:
                            reverted_by = left
                        if cut and reverted_by is not None:
                            break
                    tail = chunk[-STREAM_TAIL:] if len(chunk) >= STREAM_TAIL else (tail + chunk)[-STREAM_TAIL:]
                    if head is not None and len(head) < usage.STREAM_HEAD:
                        head += chunk
                    if translator is not None:
                        chunk = translator.feed(chunk)
                        if not chunk:  # the upstream's event has no counterpart (ping, block stop)
                            continue
                    if kept is not None:
                        kept.append(chunk)
                    if stripper is not None:
                        chunk = stripper.feed(chunk)
                        if not chunk:
                            continue
                    digest.update(chunk)
                    relayed += len(chunk)
                    events += chunk.count(content_event)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamError as exc:
            error = exc
        except _core.StreamTranslationError as exc:  # an upstream event with no translation
            error = UpstreamError("protocol", str(exc))
        except CancelledError:
            if client is None or not client.stopped():
                raise
            if not ends_with_last_event(tail, upstream_anthropic):  # else the client read it all, as SDKs
                said = usage.read_stream(head or b"", tail, upstream_anthropic)
                return await self._stopped(adm, upstream, relayed, events, digest, said, via)
        if stripper is not None and (rest := stripper.rest()):  # an event the provider never finished
            digest.update(rest)
            await send({"type": "http.response.body", "body": rest, "more_body": True})
        counts = usage.read_stream(head or b"", tail, upstream_anthropic)  # the provider's own usage
        if cut and reverted_by is not None:  # noticed between chunks: nothing failed
            return await self._cut_on_revert(
                send, adm, upstream, reverted_by, digest.hexdigest(), anthropic, via, counts
            )
        inflight: _core.Inflight | None = None if reverted_by is None else "finished-after-revert"
        if error is None and not ends_with_last_event(tail, upstream_anthropic):
            last = LAST_EVENT[upstream_anthropic]
            error = UpstreamError("protocol", f"the stream ended without its last event ({last})")
        if error is None:
            full = b"".join(kept) if kept is not None else None
            # Every event, the last one included, is with the client: one that hangs up now
            # (as SDKs do on reading the last event) got the whole answer, a 200.
            await self.record(
                adm,
                200,
                response=full,
                response_sha256=digest.hexdigest(),
                cache_ttl_s=ttl,
                via=via,
                inflight=inflight,
                reverted_by=reverted_by,
                delivered=True,
                counts=counts,
            )
            return await send({"type": "http.response.body", "body": b""})
        status = UPSTREAM_ERROR_STATUS.get(error.kind, 502)
        message = f"upstream stream broke off: {error}"
        await self.record(
            adm,
            status,
            error=f"{error.kind}: {error}",
            response_sha256=digest.hexdigest(),
            via=via,
            inflight=inflight,
            reverted_by=reverted_by,
            counts=counts,
        )
        event = errors.sse_error_event(status, message, "upstream_" + error.kind, anthropic)
        await send({"type": "http.response.body", "body": event})

    async def _stopped(self, adm, upstream, relayed: int, events: int, digest, said, via) -> None:
        """The client hung up mid-stream: the provider's stream is closed (it stops
        generating), and the record keeps what was relayed and the usage the provider said
        so far, or an estimate of it (usage.stopped_counts)."""
        await upstream.aclose()
        counts, estimated = usage.stopped_counts(said, len(adm.body), events)
        stopped = f"client closed the connection after {relayed} bytes of the stream; the provider's was closed"
        if estimated:
            stopped += f" (usage estimated: {events} content events relayed)"
        await self.record(adm, 499, error=stopped, response_sha256=digest.hexdigest(), via=via, counts=counts)

    async def _cut_on_revert(
        self, send: Send, adm, upstream, change: int, sha256: str, anthropic: bool, via, counts
    ) -> None:
        """Ends a stream whose version set left service at `change`, under `inflight_on_revert:
        cut`: the upstream is closed (its connection discarded, so the provider stops), the
        record keeps the 200 already sent, and the client gets an error event as for a
        stream that broke off."""
        await upstream.aclose()
        v = adm.versions
        served = f"policy v{v.policy}, routing v{v.routing}, config v{v.config}"
        await self.record(
            adm,
            200,
            error=f"cut on revert: {served} left service at change {change} (inflight_on_revert: cut)",
            response_sha256=sha256,
            via=via,
            inflight="cut-on-revert",
            reverted_by=change,
            counts=counts,
        )
        message = (
            f"stream cut: the versions it was served under ({served}) left service at change {change} "
            "(inflight_on_revert: cut); retry the request"
        )
        event = errors.sse_error_event(CUT_ON_REVERT_STATUS, message, "cut_on_revert", anthropic)
        await send({"type": "http.response.body", "body": event})
