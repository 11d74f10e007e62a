"""A mock LLM provider (OpenAI and Anthropic dialects) that echoes what reached it.

Tests and benchmarks point the gateway at it; ``x-mock-*`` request headers inject
latency, slow streams and errors, and ``GET /_mock/requests`` shows what arrived.
"""

from .config import MockConfig
from .server import run

__all__ = ["MockConfig", "run"]
