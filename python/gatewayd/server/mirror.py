"""Shadow traffic for a routing candidate (docs/ROLLBACK.md R13): a request in the shadow's
share, once answered by the current routing, is sent again, in the background, to the
upstream the candidate routes it to. That answer never reaches a client; its status,
latency and whether its shape matches the answer the client got are counted for
`/metrics` and written to the audit chain, one `shadow_routing` event per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import msgspec

from gatewayd import _core
from gatewayd.control.shapes import ShapeError, shape
from gatewayd.control.snapshot import Served
from gatewayd.translate import Untranslatable, translation_for
from gatewayd.upstream import UpstreamClient, UpstreamError
from gatewayd.upstream.providers import ProviderEndpoint

log = logging.getLogger("gatewayd.mirror")

MAX_IN_FLIGHT = 32  # per worker: past it a copy is skipped (counted), never queued
MAX_BODY = 4 << 20  # bytes of a shadow answer read; past it the copy counts as a failure
DIFFERENCES_KEPT = 10


class Mirror:
    def __init__(
        self,
        engine: _core.Engine,
        client: UpstreamClient,
        providers: dict[str, ProviderEndpoint],
        event: Callable[[dict], object],
    ):
        self.engine = engine
        self.client = client
        self.providers = providers
        self.event = event  # writes an audit event
        # (routing version, status, shape) -> [count, seconds]: "same", "differs", or "-"
        # when there was nothing to compare (an error either side, a stream)
        self.stats: dict[tuple[int, int, str], list[float]] = {}
        self.skipped = 0
        self._tasks: set[asyncio.Task] = set()

    def copy(self, served: Served, api: str, tenant: str, request_id: str, body: bytes, answer: bytes | None) -> None:
        """Sends the request to the shadow candidate later; `answer` is the JSON the client
        got (None for a stream or an error), to compare shapes with."""
        if len(self._tasks) >= MAX_IN_FLIGHT:
            self.skipped += 1
            return
        task = asyncio.get_running_loop().create_task(self._send(served, api, tenant, request_id, body, answer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(
        self, served: Served, api: str, tenant: str, request_id: str, body: bytes, answer: bytes | None
    ) -> None:
        routing = served.mirror
        assert routing is not None
        v = served.versions
        # The candidate's own Served: the request's policy and config, the candidate's routing.
        versions = _core.Versions(v.policy, routing.version, v.config)
        candidate = msgspec.structs.replace(served, shadow=None, routing=routing, versions=versions, mirror=None)
        adm = self.engine.admit(
            served=candidate,
            api=api,
            tenant=tenant,
            request_id=request_id,
            headers=[],
            body=body,
            cache=_core.CacheMode.OFF,
            vary="",
        )
        if adm.verdict != "allow" or adm.provider is None or adm.body is None:
            return self._count(routing.version, adm.status, "-", 0.0, request_id, adm.provider, adm.message)
        provider = self.providers[adm.provider]
        # A candidate route of the other protocol gets the translation, as served requests do.
        translation = translation_for(api, provider.kind)
        try:
            body = adm.body if translation is None else translation.request(adm.body)
        except Untranslatable as exc:
            return self._count(routing.version, 400, "-", 0.0, request_id, adm.provider, str(exc))
        started = time.monotonic()
        status, payload, error = 0, None, ""
        try:
            response = await self.client.send(
                "POST", provider.url(translation.upstream_api if translation else api), provider.headers([]), body,
                served.config.upstream_timeout_s, stream=adm.stream,
            )  # fmt: skip
            try:
                status = response.status
                payload = await response.read() if not adm.stream else None
                if translation is not None and payload is not None and status == 200:
                    payload = translation.response(payload)
                if adm.stream:
                    async for _ in response.chunks():
                        pass
            finally:
                await response.aclose()
        except UpstreamError as exc:
            error = f"{exc.kind}: {exc}"
        except msgspec.DecodeError as exc:  # a translated candidate's answer it could not read
            error = f"protocol: {exc}"
        seconds = time.monotonic() - started
        differences = _differences(answer, payload) if status == 200 else None
        said = "-" if differences is None else "differs" if differences else "same"
        self._count(routing.version, status, said, seconds, request_id, adm.provider, error, differences)

    def _count(
        self,
        version: int,
        status: int,
        said: str,
        seconds: float,
        request_id: str,
        provider: str | None,
        error: str,
        differences: list[str] | None = None,
    ) -> None:
        entry = self.stats.setdefault((version, status, said), [0, 0.0])
        entry[0] += 1
        entry[1] += seconds
        fields = {
            "kind": "shadow_routing",
            "request_id": request_id,
            "routing_version": version,
            "upstream": provider,
            "status": status,
            "latency_us": round(seconds * 1e6),
            "shape": said,
        }
        if error:
            fields["error"] = error
        if differences:
            fields["differences"] = differences[:DIFFERENCES_KEPT]
        try:
            self.event(fields)
        except _core.AuditError as exc:
            log.error("shadow routing request %s not recorded: %s", request_id, exc)


def _differences(answer: bytes | None, payload: bytes | None) -> list[str] | None:
    """The key paths and types one answer has and the other lacks; None when either is not
    a JSON answer to compare."""
    if answer is None or payload is None:
        return None
    try:
        served, shadow = shape(answer), shape(payload)
    except ShapeError:
        return ["the shadow's answer is not a JSON object"]
    return [f"shadow lacks {p}" for p in sorted(served - shadow)] + [
        f"shadow adds {p}" for p in sorted(shadow - served)
    ]
