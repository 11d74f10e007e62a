"""One API for every provider: chat (OpenAI) and messages (Anthropic) translated into each
other when the route's provider speaks the other protocol (issue 14).

Policy, the cache and the audit record see the caller's request; what goes upstream is
the translation of exactly the body policy judged (the admission's, redactions applied).
Nothing is dropped silently: a field the target cannot honour is an `Untranslatable`,
answered 400 naming it. Requests, whole answers and errors are translated here in Python
with msgspec, streams chunk by chunk in Rust (rust/core/src/translate): the figures of
bench/translate_bench.py chose each.
"""

from __future__ import annotations

from gatewayd import _core
from gatewayd.translate.errors import Untranslatable, error_answer
from gatewayd.translate.requests import to_anthropic, to_openai
from gatewayd.translate.responses import anthropic_to_openai, openai_to_anthropic

# The API each provider kind speaks, for the requests that translate (chat and messages).
KIND_API = {"openai": "chat", "anthropic": "messages"}
TRANSLATED = frozenset(KIND_API.values())


def translation_for(api: str, kind: str) -> Translation | None:
    """How a request of `api` reaches a provider of `kind`: None when the provider speaks
    it (routing sends only chat and messages requests to the other protocol)."""
    target = KIND_API[kind]
    if api == target or api not in TRANSLATED:
        return None
    return Translation(api, target)


class Translation:
    """One request's way between the caller's API and its upstream's."""

    __slots__ = ("api", "upstream_api", "_include_usage")

    def __init__(self, api: str, upstream_api: str) -> None:
        self.api = api  # the caller's
        self.upstream_api = upstream_api
        self._include_usage = False

    def request(self, body: bytes) -> bytes:
        """Raises Untranslatable naming the field the target cannot take."""
        if self.upstream_api == "messages":
            translated, self._include_usage = to_anthropic(body)
            return translated
        return to_openai(body)

    def response(self, payload: bytes) -> bytes:
        """A whole 200 answer in the caller's protocol; ValueError if it is not an answer."""
        return anthropic_to_openai(payload) if self.upstream_api == "messages" else openai_to_anthropic(payload)

    def error(self, status: int, payload: bytes) -> tuple[int, bytes] | None:
        """An upstream error in the caller's shape and status, or None if it has no shape."""
        return error_answer(status, payload, self.upstream_api == "messages")

    def stream(self) -> _core.StreamTranslator:
        """Per chunk, in Rust: `feed` raises _core.StreamTranslationError on an event it
        cannot read or translate."""
        return _core.StreamTranslator(from_anthropic=self.upstream_api == "messages", include_usage=self._include_usage)


__all__ = ["KIND_API", "Translation", "Untranslatable", "translation_for"]
