"""The drills' cluster: a real redis-server, the bundled mock provider, and one `gatewayd
serve` with N replicas sharing that Redis, plus a registry on the same store."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from gatewayd import config  # noqa: E402
from gatewayd.control.registry import Registry  # noqa: E402
from gatewayd.control.stores import open_store  # noqa: E402
from support.gateway import Gateway  # noqa: E402
from support.mock import start_mock  # noqa: E402
from support.procs import free_port, stop_process  # noqa: E402
from support.redis import start_redis  # noqa: E402


class Cluster:
    def __init__(self, root: Path, replicas: int, extra_providers: str = "", admin: bool = False):
        self.redis_url, self._redis = start_redis(dir=root, appendonly=True)
        mock_url, self._mock = start_mock("--require-key", "provider-secret")
        (root / "gw").mkdir()
        self.gw = Gateway(
            root / "gw",
            int(mock_url.rsplit(":", 1)[1]),
            free_port(),
            workers=replicas,
            redis_url=self.redis_url,
            extra_providers=extra_providers,
            admin=admin,
        ).start()
        settings = config.load(self.gw.config)
        self.registry = Registry(open_store(settings), [(n, p.kind) for n, p in settings.providers.items()])
        self._wait_replicas(replicas)

    def stop(self) -> None:
        self.gw.stop()
        stop_process(self._mock)
        stop_process(self._redis)

    def _wait_replicas(self, count: int) -> None:
        deadline = time.monotonic() + 30
        while len([r for r in self.registry.replicas() if time.time() - r.heartbeat_at < 3]) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {count} replicas registered")
            time.sleep(0.1)


def percentile(sorted_values: list[float], p: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]
