"""The mock provider as a raw RSGI app: routing, auth, fault injection, the request journal.

RSGI rather than ASGI because, pinned to one core, it serves about a third more requests
per second, and the mock must never be what a gateway benchmark measures.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable

import msgspec
from granian.rsgi import HTTPProtocol, ProtocolClosed, Scope

from . import anthropic, openai
from .common import ProviderError, encode, new_id
from .config import HeaderGetter, KnobError, Knobs, MockConfig, resolve_knobs

JOURNAL_SIZE = 100
SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key"})

Handler = Callable[[bytes, Knobs], bytes | list[bytes]]


class Dialect(msgspec.Struct, frozen=True):
    """What differs between providers around the handlers: auth and the error shape."""

    authenticate: Callable[[HeaderGetter, str | None], None]
    error_body: Callable[[int, str, str | None], bytes]
    request_id_header: str


OPENAI = Dialect(openai.authenticate, openai.error_body, "x-request-id")
ANTHROPIC = Dialect(anthropic.authenticate, anthropic.error_body, "request-id")

ROUTES: dict[tuple[str, str], tuple[Dialect, Handler]] = {
    ("POST", "/v1/chat/completions"): (OPENAI, openai.chat),
    ("POST", "/v1/completions"): (OPENAI, openai.completions),
    ("POST", "/v1/embeddings"): (OPENAI, openai.embeddings),
    ("GET", "/v1/models"): (OPENAI, openai.models),
    ("POST", "/v1/messages"): (ANTHROPIC, anthropic.messages),
}
KNOWN_PATHS = frozenset(path for _, path in ROUTES)

JSON = "application/json"
INVALID_JSON = b"<html><body>\x00 maintenance</body></html>"  # x-mock-fault: invalid-json


class RecordedRequest(msgspec.Struct):
    """A journal entry as served by ``GET /_mock/requests``; secrets show only as ``true``."""

    method: str
    path: str
    headers: dict[str, str | bool]
    body: msgspec.Raw | str  # the JSON document as received, or the text if not JSON


class MockApp:
    """One instance per worker process, so the journal is per process: test with 1 worker."""

    def __init__(self, config: MockConfig) -> None:
        self._config = config
        # Raw (method, path, headers, body); redacted and decoded only when read.
        self._journal: deque[tuple[str, str, list[tuple[str, str]], bytes]] = deque(maxlen=JOURNAL_SIZE)
        # Streams sent to their end, and streams whose client (the gateway) closed them first.
        self._streams = {"completed": 0, "abandoned": 0}

    async def __rsgi__(self, scope: Scope, proto: HTTPProtocol) -> None:
        if scope.path.startswith("/_mock/"):
            return self._admin(scope, proto)
        body = await proto()
        self._journal.append((scope.method, scope.path, scope.headers.items(), body))
        route = ROUTES.get((scope.method, scope.path))
        dialect = route[0] if route else ANTHROPIC if scope.path.startswith("/v1/messages") else OPENAI
        headers = [("content-type", JSON), (dialect.request_id_header, new_id("req_"))]
        try:
            knobs = resolve_knobs(self._config, scope.headers.get)
        except KnobError as exc:
            return proto.response_bytes(400, headers, dialect.error_body(400, str(exc), None))
        if knobs.latency:
            await asyncio.sleep(knobs.latency)
        try:
            reply = self._reply(scope, route, body, knobs)
        except ProviderError as exc:
            error = b"" if knobs.fault == "empty-error" else dialect.error_body(exc.status, exc.message, exc.code)
            return proto.response_bytes(exc.status, headers, error)
        if knobs.fault == "invalid-json":
            reply = INVALID_JSON
        elif knobs.fault == "truncate":
            reply = reply[: len(reply) // 2] if isinstance(reply, bytes) else reply[:2]
        if isinstance(reply, bytes):
            return proto.response_bytes(200, headers, reply)
        headers[0] = ("content-type", "text/event-stream")
        headers.append(("cache-control", "no-cache"))
        ended = await _stream(proto, headers, reply, knobs.chunk_delay)
        self._streams["completed" if ended else "abandoned"] += 1

    def _reply(
        self, scope: Scope, route: tuple[Dialect, Handler] | None, body: bytes, knobs: Knobs
    ) -> bytes | list[bytes]:
        """The handler's reply, unless routing, auth or an injected fault says otherwise."""
        if route is None:
            status = 405 if scope.path in KNOWN_PATHS else 404
            raise ProviderError(status, f"no route for {scope.method} {scope.path}")
        dialect, handler = route
        dialect.authenticate(scope.headers.get, self._config.require_key)
        if knobs.status is not None:
            raise ProviderError(knobs.status, f"injected by x-mock-status: {knobs.status}")
        if knobs.error_rate and random.random() < knobs.error_rate:
            raise ProviderError(500, "injected by the mock's error rate")
        if knobs.fault == "empty-error":
            raise ProviderError(500, "injected by x-mock-fault: empty-error")
        if knobs.fault == "echo-key":
            raise ProviderError(401, f"Incorrect API key provided: {_presented_key(scope.headers.get)}")
        return handler(body, knobs)

    def _admin(self, scope: Scope, proto: HTTPProtocol) -> None:
        """Test hooks: a readiness probe and the journal of received requests."""
        route = (scope.method, scope.path)
        if route == ("GET", "/_mock/health"):
            proto.response_bytes(200, [("content-type", JSON)], b'{"status":"ok"}')
        elif route == ("GET", "/_mock/requests"):
            proto.response_bytes(200, [("content-type", JSON)], encode([_recorded(*e) for e in self._journal]))
        elif route == ("GET", "/_mock/streams"):
            proto.response_bytes(200, [("content-type", JSON)], encode(self._streams))
        elif route == ("DELETE", "/_mock/requests"):
            self._journal.clear()
            proto.response_empty(204, [])
        else:
            proto.response_bytes(404, [("content-type", JSON)], b'{"error":"no such mock endpoint"}')


async def _stream(proto: HTTPProtocol, headers: list[tuple[str, str]], frames: list[bytes], delay: float) -> bool:
    """Sends the events; False when the client went away mid-stream (nothing is left to
    tell it)."""
    transport = proto.response_stream(200, headers)
    try:
        for i, frame in enumerate(frames):
            if i and delay:
                await asyncio.sleep(delay)
            await transport.send_bytes(frame)
    except ProtocolClosed:
        return False
    return True


def _presented_key(get: HeaderGetter) -> str:
    return get("x-api-key") or (get("authorization") or "").partition(" ")[2].strip()


def _recorded(method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> RecordedRequest:
    shown: dict[str, str | bool] = {k: True if k in SECRET_HEADERS else v for k, v in headers}
    try:
        msgspec.json.decode(body)
        recorded: msgspec.Raw | str = msgspec.Raw(body)
    except msgspec.DecodeError:
        recorded = body.decode(errors="replace")
    return RecordedRequest(method, path, shown, recorded)


def create_app() -> MockApp:
    """Granian factory: each worker builds its app from the settings ``run`` exported."""
    return MockApp(MockConfig.from_env())
