"""The vocabulary of admin handlers: an authenticated call in, a reply out, or an ApiError."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from urllib.parse import parse_qsl

import msgspec

from gatewayd.server.asgi import JSON, BodyTooLarge, Receive, read_body

_encode = msgspec.json.encode


class ApiError(Exception):
    """Refused before anything changed; answered in the OpenAI error shape."""

    def __init__(self, status: int, message: str, code: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or []


class Reply(msgspec.Struct, frozen=True):
    status: int
    body: bytes
    content_type: bytes = JSON
    headers: list[tuple[bytes, bytes]] = []
    stream: AsyncGenerator[bytes, None] | None = None  # instead of `body`: server-sent events


class Call(msgspec.Struct, frozen=True):
    """One request whose token was accepted for its route."""

    scope: dict
    receive: Receive
    actor: str  # "token:<name>": what change records name
    path: dict[str, str]  # the route's named groups
    query: dict[str, str]

    def header(self, name: bytes) -> str:
        """The header's value as UTF-8 text; empty when absent."""
        for key, value in self.scope["headers"]:
            if key == name:
                try:
                    return value.decode()
                except UnicodeDecodeError:
                    raise ApiError(400, f"{name.decode()}: not UTF-8", "invalid_request") from None
        return ""

    def param(self, name: str, header: bytes) -> str:
        """A query parameter, or else the header that may carry it instead."""
        return self.query.get(name) or self.header(header)

    async def body(self, limit: int) -> bytes:
        length = self.header(b"content-length")
        try:
            return await read_body(self.receive, limit, int(length) if length.isdigit() else None)
        except BodyTooLarge:
            raise ApiError(413, f"request body over {limit} bytes", "body_too_large") from None


def parse_query(raw: bytes) -> dict[str, str]:
    try:
        return dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True, errors="strict"))
    except UnicodeDecodeError:
        raise ApiError(400, "query string: not UTF-8 after percent-decoding", "invalid_request") from None


def json_reply(status: int, value: object, headers: list[tuple[bytes, bytes]] | None = None) -> Reply:
    return Reply(status, _encode(value), JSON, headers or [])
