"""Which control store a process uses: Redis when `[control] redis_url` is set (replicas on
many hosts share it; also GATEWAYD_CONTROL_REDIS_URL), else the embedded SQLite store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gatewayd.config import ConfigError, Settings
from gatewayd.control.local_store import LocalStore

if TYPE_CHECKING:
    from gatewayd.control.redis_store import RedisStore

Store = "LocalStore | RedisStore"


def open_store(settings: Settings) -> LocalStore | RedisStore:
    control = settings.control
    if not control.redis_url:
        return LocalStore(settings.path(control.dir))
    # Imported here: redis-py costs ~140 ms of start-up, which an operator's rollback
    # command on the embedded store should not pay.
    from gatewayd.control.redis_store import RedisStore

    try:
        return RedisStore(control.redis_url)
    except ValueError as exc:  # redis-py's verdict on a malformed URL
        raise ConfigError(f"control.redis_url: {exc}") from None
