"""Serving the mock: granian in this process, with the settings exported to its workers."""

from __future__ import annotations

import os

from granian import Granian
from granian.constants import Interfaces, Loops
from granian.log import LogLevels

from .config import CONFIG_ENV, MockConfig


def run(
    host: str = "127.0.0.1",
    port: int = 9100,
    latency_ms: float = 0.0,
    chunk_delay_ms: float = 0.0,
    error_rate: float = 0.0,
    chunks: int = 8,
    workers: int = 1,
    require_key: str | None = None,
) -> None:
    """Serve the mock provider until SIGINT/SIGTERM.

    The knobs are process-wide defaults; ``x-mock-*`` request headers override them.
    ``require_key`` makes auth demand that exact key instead of any non-empty one.
    """
    config = MockConfig(
        latency_ms=latency_ms,
        chunk_delay_ms=chunk_delay_ms,
        error_rate=error_rate,
        chunks=chunks,
        require_key=require_key,
    )
    os.environ[CONFIG_ENV] = config.to_env()
    Granian(
        "gatewayd.mock.app:create_app",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.RSGI,
        workers=workers,
        loop=Loops.uvloop,
        websockets=False,
        backlog=2048,
        log_level=LogLevels.warning,
    ).serve()
