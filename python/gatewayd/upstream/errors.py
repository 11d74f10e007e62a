"""The one exception type the pipeline sees from the upstream client."""

from __future__ import annotations

from typing import Literal

ErrorKind = Literal["unreachable", "timeout", "protocol"]


class UpstreamError(Exception):
    """The provider could not be reached, stayed silent too long, or broke the exchange.

    ``kind`` is ``"unreachable"`` (no connection), ``"timeout"`` (no headers, or no body
    bytes, within the timeout) or ``"protocol"`` (connection lost or garbled mid-way).
    """

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind: ErrorKind = kind
