"""Error bodies in the shape each API's clients expect, so SDKs raise their usual errors."""

from __future__ import annotations

import msgspec

# HTTP status -> (OpenAI error type, Anthropic error type)
_TYPES = {
    400: ("invalid_request_error", "invalid_request_error"),
    401: ("authentication_error", "authentication_error"),
    403: ("permission_error", "permission_error"),
    404: ("invalid_request_error", "not_found_error"),
    405: ("invalid_request_error", "invalid_request_error"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_error"),
    502: ("api_error", "api_error"),
    503: ("api_error", "overloaded_error"),
    504: ("timeout_error", "timeout_error"),
}

_encode = msgspec.json.encode


def error_type(status: int, anthropic: bool) -> str:
    types = _TYPES.get(status) or (("invalid_request_error",) * 2 if status < 500 else ("api_error",) * 2)
    return types[1] if anthropic else types[0]


def error_body(status: int, message: str, code: str, anthropic: bool, param: str | None = None) -> bytes:
    """`{"error": {...}}` for OpenAI clients, `{"type": "error", "error": {...}}` for Anthropic;
    `param` names the request field at fault (OpenAI's shape has room for it)."""
    kind = error_type(status, anthropic)
    if anthropic:
        return _encode({"type": "error", "error": {"type": kind, "message": message}})
    return _encode({"error": {"message": message, "type": kind, "param": param, "code": code}})


def sse_error_event(status: int, message: str, code: str, anthropic: bool) -> bytes:
    """The last event of a stream cut short: a clear error instead of a silent truncation."""
    body = error_body(status, message, code, anthropic)
    if anthropic:
        return b"event: error\ndata: " + body + b"\n\n"
    return b"data: " + body + b"\n\n"
