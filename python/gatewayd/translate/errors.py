"""Refusals of what cannot be translated, and upstream errors re-shaped for the caller."""

from __future__ import annotations

import msgspec

from gatewayd.server import errors

# Anthropic's statuses OpenAI clients do not know: 529 (overloaded) reads as 503.
TO_OPENAI_STATUS = {529: 503}


class Untranslatable(Exception):
    """A request field the target API cannot honour: a 400 naming `field`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def refusal(exc: msgspec.ValidationError, target: str) -> Untranslatable:
    """msgspec's message names the field and where it is (`$.messages[0]`)."""
    said = str(exc)
    field = said.rpartition(" - at `")[2].rstrip("`") if " - at `" in said else "$"
    return Untranslatable(field, f"cannot be translated to the {target}: {said}")


class _Detail(msgspec.Struct):
    message: str
    type: str | None = None
    code: str | int | None = None


class _ErrorBody(msgspec.Struct):
    error: _Detail


_error = msgspec.json.Decoder(_ErrorBody)


def error_answer(status: int, payload: bytes, from_anthropic: bool) -> tuple[int, bytes] | None:
    """An upstream error body of the other protocol in the caller's shape (OpenAI's for an
    Anthropic upstream, and back), with the status the caller's SDK knows; None when the
    body is not an error of either shape (the pipeline wraps it)."""
    try:
        detail = _error.decode(payload).error
    except msgspec.DecodeError:
        return None
    if from_anthropic:
        status = TO_OPENAI_STATUS.get(status, status)
    code = detail.code if isinstance(detail.code, str) else (detail.type or "upstream_error")
    return status, errors.error_body(status, detail.message, code, not from_anthropic)
