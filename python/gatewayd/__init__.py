"""gatewayd: a drop-in LLM gateway with a Rust hot path and provably safe rollbacks."""

__version__ = "0.1.0"
