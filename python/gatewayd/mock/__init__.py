"""A mock LLM provider (OpenAI and Anthropic dialects) that echoes what reached it.

Endpoints: ``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``,
``GET /v1/models`` (Bearer auth) and ``POST /v1/messages`` (``x-api-key`` or Bearer, plus
``anthropic-version``). Replies say ``"echo: " + <last user text>``; models named
``unknown*`` get a 404. Test hooks: ``GET /_mock/health``, ``GET|DELETE /_mock/requests``
(the last 100 requests of this process, secrets shown only as ``true``), ``GET
/_mock/streams`` (how many streams ran to their end, and how many the client closed first).

Knobs, process-wide through ``run`` and per request through headers (headers win):
``x-mock-latency-ms``, ``x-mock-chunk-delay-ms``, ``x-mock-chunks``, ``x-mock-status``
(answer with this error status, in the provider's error shape), ``x-mock-error-rate``,
``x-mock-fault`` (answer as a broken provider would: see ``config.FAULTS``),
``x-mock-shape: altered`` (answer chat and messages in another response shape: see
``config.SHAPES``).
"""

from .server import run

__all__ = ["run"]
