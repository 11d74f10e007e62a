"""The admin API as a raw ASGI app: bearer tokens or console sessions, roles, routes, and
errors in the OpenAI error shape. Served by `gatewayd admin` (or by `gatewayd serve` when
`admin_port` is set), with the operator console at `/`."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Awaitable, Callable

import msgspec

from gatewayd import config
from gatewayd.admin import console, session
from gatewayd.admin.api import AdminApi
from gatewayd.admin.http import ApiError, Call, Reply, json_reply, parse_query
from gatewayd.admin.live import Hub
from gatewayd.errors import GatewaydError, meaning
from gatewayd.server.asgi import JSON, BodyTooLarge, ClientGone, read_body
from gatewayd.server.errors import error_body

log = logging.getLogger("gatewayd.admin")

Handler = Callable[[AdminApi, Call], Awaitable[Reply]]
SIGN_IN_LIMIT = 4096
SAFE_METHODS = frozenset({"GET", "HEAD"})

# path pattern -> {method: (least role, handler)}
ROUTES: list[tuple[re.Pattern[str], dict[str, tuple[str, Handler]]]] = [
    (re.compile(r"/v1/status"), {"GET": ("viewer", AdminApi.status)}),
    (re.compile(r"/metrics"), {"GET": ("viewer", AdminApi.metrics)}),
    (re.compile(r"/v1/history"), {"GET": ("viewer", AdminApi.history)}),
    (re.compile(r"/v1/at"), {"GET": ("viewer", AdminApi.at)}),
    (
        re.compile(r"/v1/versions/(?P<domain>[^/]+)"),
        {"GET": ("viewer", AdminApi.versions), "POST": ("admin", AdminApi.push)},
    ),
    (re.compile(r"/v1/versions/(?P<domain>[^/]+)/(?P<id>[0-9]{1,18})"), {"GET": ("viewer", AdminApi.version)}),
    (re.compile(r"/v1/versions/(?P<domain>[^/]+)/(?P<id>[0-9]{1,18})/diff"), {"GET": ("viewer", AdminApi.diff)}),
    (re.compile(r"/v1/audit"), {"GET": ("viewer", AdminApi.audit)}),
    (re.compile(r"/v1/audit/verify"), {"POST": ("viewer", AdminApi.audit_verify)}),
    (re.compile(r"/v1/activate"), {"POST": ("operator", AdminApi.activate)}),
    (re.compile(r"/v1/rollback"), {"POST": ("operator", AdminApi.rollback)}),
    (re.compile(r"/v1/canary"), {"POST": ("operator", AdminApi.canary)}),
    (re.compile(r"/v1/promote"), {"POST": ("operator", AdminApi.promote)}),
    (re.compile(r"/v1/killswitch"), {"POST": ("operator", AdminApi.killswitch)}),
    (re.compile(r"/v1/keys"), {"GET": ("admin", AdminApi.keys), "POST": ("admin", AdminApi.create_key)}),
    (re.compile(r"/v1/keys/(?P<name>[^/]{1,128})/revoke"), {"POST": ("admin", AdminApi.revoke_key)}),
]


class SignIn(msgspec.Struct, forbid_unknown_fields=True):
    token: str


class Caller(msgspec.Struct, frozen=True):
    token: config.AdminToken
    session_id: str  # empty for a bearer token


class AdminApp:
    def __init__(self, settings: config.Settings):
        self.api = AdminApi(settings)
        self.tokens = {t.sha256: t for t in settings.admin_tokens}
        self.sessions = session.Sessions()
        self.assets = console.load_assets()
        self.hub = Hub(self.api.run, settings.path(settings.control.dir) / "metrics")

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                if message["type"] == "lifespan.startup":
                    self.hub.start()
                await send({"type": "lifespan.startup.complete"})
            self.hub.stop()
            await send({"type": "lifespan.shutdown.complete"})

    async def _http(self, scope: dict, receive, send) -> None:
        try:
            reply = await self._route(scope, receive)
        except ClientGone:
            return
        except ApiError as exc:
            reply = _error(exc.status, str(exc), exc.code, exc.headers)
        except GatewaydError as exc:  # every error of ours, looked up in one table
            what = meaning(exc)
            reply = _error(what.status, str(exc), what.code)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            reply = _error(500, "internal error; see the admin log", "internal_error")
        headers = [(b"content-type", reply.content_type), *console.SECURITY_HEADERS, *reply.headers]
        if not any(name == b"cache-control" for name, _ in reply.headers):
            headers.append((b"cache-control", b"no-store"))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        if reply.stream is None:
            await send({"type": "http.response.body", "body": reply.body})
            return
        async with contextlib.aclosing(reply.stream) as chunks:
            try:
                async for chunk in chunks:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            except (OSError, RuntimeError, asyncio.CancelledError):  # the client went away mid-stream
                return

    async def _route(self, scope: dict, receive) -> Reply:
        """Token (401), then route (404, 405), then role (403): unauthenticated callers learn nothing."""
        path, method = scope["path"], scope["method"]
        if path == "/healthz":
            return json_reply(200, {"status": "ok"})
        if method in SAFE_METHODS and path in self.assets:
            return self._asset(scope, self.assets[path])
        if path == "/console/session":
            return await self._session(scope, receive, method)
        caller = self._caller(scope)
        if caller.session_id and method not in SAFE_METHODS:
            self._check_csrf(scope, caller)
        if path == "/v1/live":
            if method != "GET":
                raise ApiError(405, "/v1/live accepts GET", "method_not_allowed", [(b"allow", b"GET")])
            session_id = caller.session_id
            stream = self.hub.events(receive, lambda: not session_id or self.sessions.find(session_id) is not None)
            return Reply(200, b"", b"text/event-stream", [(b"x-accel-buffering", b"no")], stream)
        for pattern, methods in ROUTES:  # noqa: B007 (used after the break)
            match = pattern.fullmatch(path)
            if match:
                break
        else:
            raise ApiError(404, f"no route for {method} {path}", "not_found")
        if method not in methods:
            allow = ", ".join(methods)
            raise ApiError(405, f"{path} accepts {allow}", "method_not_allowed", [(b"allow", allow.encode())])
        role, handler = methods[method]
        token = caller.token
        if config.ADMIN_ROLES.index(token.role) < config.ADMIN_ROLES.index(role):
            raise ApiError(
                403, f"token {token.name!r} has role {token.role}; {method} {path} needs {role}", "insufficient_role"
            )
        call = Call(scope, receive, f"token:{token.name}", match.groupdict(), parse_query(scope["query_string"]))
        return await handler(self.api, call)

    def _asset(self, scope: dict, asset: console.Asset) -> Reply:
        headers = [(b"etag", asset.etag), (b"cache-control", b"no-cache")]
        if any(k == b"if-none-match" and v == asset.etag for k, v in scope["headers"]):
            return Reply(304, b"", asset.content_type, headers)
        return Reply(200, asset.body, asset.content_type, headers)

    async def _session(self, scope: dict, receive, method: str) -> Reply:
        """POST signs in with a token (in the body, never the URL); GET says who is signed in
        (with the CSRF token the page sends on changes); DELETE signs out."""
        secure = _secure(scope)
        if method == "POST":
            self._check_sign_in_origin(scope)
            length = dict(scope["headers"]).get(b"content-length", b"")
            try:
                raw = await read_body(receive, SIGN_IN_LIMIT, int(length) if length.isdigit() else None)
            except BodyTooLarge:
                raise ApiError(413, f"request body over {SIGN_IN_LIMIT} bytes", "body_too_large") from None
            try:
                sent = msgspec.json.decode(raw, type=SignIn).token
            except msgspec.DecodeError:
                raise ApiError(400, 'request body: expected {"token": "..."}', "invalid_request") from None
            token = self.tokens.get(hashlib.sha256(sent.encode()).hexdigest())
            if token is None:
                log.warning("console sign-in refused: unknown token")
                raise ApiError(401, "unknown admin token", "invalid_token")
            session_id, opened = self.sessions.open(token)
            log.info("console session opened for token:%s (%s)", token.name, token.role)
            view = session.SessionView(token.name, token.role, opened.csrf, opened.expires_at)
            return json_reply(200, view, [(b"set-cookie", session.set_cookie(session_id, secure))])
        caller = self._caller(scope)
        if not caller.session_id:
            raise ApiError(400, "/console/session is the console's; API callers send a bearer token", "invalid_request")
        found = self.sessions.find(caller.session_id)
        assert found is not None
        if method == "GET":
            view = session.SessionView(found.token.name, found.token.role, found.csrf, found.expires_at)
            return json_reply(200, view)
        if method == "DELETE":
            self._check_csrf(scope, caller)
            self.sessions.close(caller.session_id)
            return json_reply(200, {"signed_out": True}, [(b"set-cookie", session.clear_cookie(secure))])
        raise ApiError(405, "/console/session accepts GET, POST, DELETE", "method_not_allowed")

    def _caller(self, scope: dict) -> Caller:
        headers = scope["headers"]
        for name, value in headers:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                token = self.tokens.get(hashlib.sha256(value[7:].strip()).hexdigest())
                if token is not None:
                    return Caller(token, "")
        session_id = session.session_id_from(headers)
        found = self.sessions.find(session_id) if session_id else None
        if found is not None:
            return Caller(found.token, session_id)
        raise ApiError(
            401,
            "missing or unknown admin token (Authorization: Bearer <token>), or the console session ended",
            "invalid_token",
            [(b"www-authenticate", b"Bearer")],
        )

    def _check_sign_in_origin(self, scope: dict) -> None:
        """A sign-in comes from the console's own page: JSON (which a cross-site form cannot
        send) and, when the browser names its origin, this host."""
        headers = dict(scope["headers"])
        if not headers.get(b"content-type", b"").startswith(b"application/json"):
            raise ApiError(415, "sign-in: send JSON (content-type: application/json)", "unsupported_media_type")
        origin = headers.get(b"origin")
        if origin is not None and origin.split(b"://", 1)[-1] != headers.get(b"host", b""):
            raise ApiError(403, "sign-in: from another origin", "cross_origin")

    def _check_csrf(self, scope: dict, caller: Caller) -> None:
        found = self.sessions.find(caller.session_id)
        if found is None or not session.csrf_ok(found, scope["headers"]):
            raise ApiError(403, "missing or wrong x-csrf-token for this console session", "csrf_failed")


def _secure(scope: dict) -> bool:
    forwarded = dict(scope["headers"]).get(b"x-forwarded-proto", b"")
    return scope.get("scheme") == "https" or forwarded == b"https"


def _error(status: int, message: str, code: str, headers: list[tuple[bytes, bytes]] | None = None) -> Reply:
    return Reply(status, error_body(status, message, code, anthropic=False), JSON, headers or [])


def create_app() -> AdminApp:
    """granian's factory entry point: the config path comes through the environment."""
    level = os.environ.get("GATEWAYD_LOG_LEVEL", "INFO")
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    return AdminApp(config.load(os.environ.get("GATEWAYD_CONFIG") or None))
