"""The admin API as a raw ASGI app: bearer tokens, roles, routes, and errors in the OpenAI
error shape. Served by `gatewayd admin` (or by `gatewayd serve` when `admin_port` is set)."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Awaitable, Callable

from gatewayd import config
from gatewayd.admin.api import AdminApi
from gatewayd.admin.http import ApiError, Call, Reply, json_reply, parse_query
from gatewayd.errors import GatewaydError, meaning
from gatewayd.server.asgi import JSON, ClientGone, respond
from gatewayd.server.errors import error_body

log = logging.getLogger("gatewayd.admin")

Handler = Callable[[AdminApi, Call], Awaitable[Reply]]

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
    (re.compile(r"/v1/activate"), {"POST": ("operator", AdminApi.activate)}),
    (re.compile(r"/v1/rollback"), {"POST": ("operator", AdminApi.rollback)}),
    (re.compile(r"/v1/canary"), {"POST": ("operator", AdminApi.canary)}),
    (re.compile(r"/v1/promote"), {"POST": ("operator", AdminApi.promote)}),
    (re.compile(r"/v1/keys"), {"GET": ("admin", AdminApi.keys), "POST": ("admin", AdminApi.create_key)}),
    (re.compile(r"/v1/keys/(?P<name>[^/]{1,128})/revoke"), {"POST": ("admin", AdminApi.revoke_key)}),
]


class AdminApp:
    def __init__(self, settings: config.Settings):
        self.api = AdminApi(settings)
        self.tokens = {t.sha256: t for t in settings.admin_tokens}

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
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
        headers = [(b"content-type", reply.content_type), *reply.headers]
        await respond(send, reply.status, headers, reply.body)

    async def _route(self, scope: dict, receive) -> Reply:
        """Token (401), then route (404, 405), then role (403): unauthenticated callers learn nothing."""
        path, method = scope["path"], scope["method"]
        if path == "/healthz":
            return json_reply(200, {"status": "ok"})
        token = self._token(scope["headers"])
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
        if config.ADMIN_ROLES.index(token.role) < config.ADMIN_ROLES.index(role):
            raise ApiError(
                403, f"token {token.name!r} has role {token.role}; {method} {path} needs {role}", "insufficient_role"
            )
        call = Call(scope, receive, f"token:{token.name}", match.groupdict(), parse_query(scope["query_string"]))
        return await handler(self.api, call)

    def _token(self, headers: list[tuple[bytes, bytes]]) -> config.AdminToken:
        for name, value in headers:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                token = self.tokens.get(hashlib.sha256(value[7:].strip()).hexdigest())
                if token is not None:
                    return token
        raise ApiError(
            401,
            "missing or unknown admin token (Authorization: Bearer <token>)",
            "invalid_token",
            [(b"www-authenticate", b"Bearer")],
        )


def _error(status: int, message: str, code: str, headers: list[tuple[bytes, bytes]] | None = None) -> Reply:
    return Reply(status, error_body(status, message, code, anthropic=False), JSON, headers or [])


def create_app() -> AdminApp:
    """granian's factory entry point: the config path comes through the environment."""
    level = os.environ.get("GATEWAYD_LOG_LEVEL", "INFO")
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    return AdminApp(config.load(os.environ.get("GATEWAYD_CONFIG") or None))
