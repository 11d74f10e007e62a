"""Starting the mock provider (``python -m gatewayd.mock``) as a real process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .procs import ServerProcess, free_port, start_process

PYTHON_SRC = Path(__file__).resolve().parents[2] / "python"


def start_mock(*flags: str, port: int | None = None) -> tuple[str, ServerProcess]:
    """A one-worker mock on `port` (default: a free one), given extra CLI ``flags``;
    returns (base URL, process)."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "gatewayd.mock", "--host", "127.0.0.1", "--port", str(port), *flags]
    pythonpath = os.pathsep.join(filter(None, [str(PYTHON_SRC), os.environ.get("PYTHONPATH")]))
    return url, start_process(argv, f"{url}/_mock/health", env={"PYTHONPATH": pythonpath})
