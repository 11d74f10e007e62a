"""Talking to LLM providers."""

from .http import UpstreamClient, UpstreamError, UpstreamResponse

__all__ = ["UpstreamClient", "UpstreamError", "UpstreamResponse"]
