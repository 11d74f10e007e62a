"""The one exception type the pipeline sees from the upstream client."""

from __future__ import annotations

from typing import Literal

from gatewayd.errors import GatewaydError

ErrorKind = Literal["unreachable", "timeout", "protocol"]


class UpstreamError(GatewaydError):
    """The provider could not be reached, stayed silent too long, or broke the exchange.

    ``kind`` is ``"unreachable"`` (no connection), ``"timeout"`` (no headers, or no body
    bytes, within the timeout) or ``"protocol"`` (connection lost or garbled mid-way).
    """

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind: ErrorKind = kind
