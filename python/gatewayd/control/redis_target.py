"""Which Redis the control store talks to: one server (`redis://`, `rediss://`, `unix://`),
or whichever server Redis Sentinel names master of a service
(`redis+sentinel://[user:password@]host:port[,host:port...]/service[?db=N]`), so that a
failover is followed without a config change or a restart.

The credentials in a sentinel URL are the master's; sentinels are asked without them.
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import msgspec
import redis
from redis.sentinel import Sentinel

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379


class SentinelService(msgspec.Struct, frozen=True):
    """A master found through sentinels, as named in a `redis+sentinel://` URL."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None


class RedisTarget:
    """Makes clients for one URL; every client of a sentinel target asks the sentinels
    for the master when it connects, so it reaches the promoted replica after a failover."""

    def __init__(self, url: str):
        self.url = url
        self.sentinel = parse_sentinel_url(url) if urlsplit(url).scheme == SENTINEL_SCHEME else None
        self.where = _redacted(url)
        self._managers: list[Sentinel] = []  # one per client, each with its sentinel connections

    def client(self, **options: Any) -> redis.Redis:
        """A client with `options` (timeouts, retry, ...) for its connections to the master."""
        s = self.sentinel
        if s is None:
            return redis.Redis.from_url(self.url, **options)
        sockets = {k: v for k, v in options.items() if k.startswith("socket_")}
        manager = Sentinel(s.sentinels, sentinel_kwargs=sockets)
        self._managers.append(manager)
        return manager.master_for(s.service, db=s.db, username=s.username, password=s.password, **options)

    def close(self) -> None:
        """Closes the connections to the sentinels (each client closes its own to the master)."""
        for manager in self._managers:
            manager.close()
        self._managers.clear()

    def topology(self, timeout_s: float) -> str:
        """What the sentinels say of the master, in one line (empty for one server): where
        it is, whether it is down or was failed over, its replicas and the sentinels.
        Asks the sentinels only, so it answers while the master is unreachable."""
        s = self.sentinel
        if s is None:
            return ""
        errors = []
        for host, port in s.sentinels:
            client = redis.Redis(host=host, port=port, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
            try:
                return _describe(s.service, cast(dict[str, Any], client.sentinel_master(s.service)))
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                errors.append(f"{host}:{port}: {exc}")
            except redis.ResponseError as exc:  # this sentinel does not monitor the service
                errors.append(f"{host}:{port}: {exc}")
            finally:
                client.close()
        return f"sentinel service {s.service}: no sentinel answers ({'; '.join(errors)})"


def _describe(service: str, master: dict[str, Any]) -> str:
    """'sentinel service gwmaster: master 127.0.0.1:6380 up, failed over (config epoch 1), ...'"""
    flags = set(str(master["flags"]).split(","))
    down = sorted(flags & {"s_down", "o_down", "disconnected"})
    state = f"DOWN ({','.join(down)})" if down else "up"
    if "failover_in_progress" in flags:
        state += ", failover in progress"
    epoch = int(master["config-epoch"])
    history = f"failed over (config epoch {epoch})" if epoch else "never failed over"
    sentinels = int(master["num-other-sentinels"]) + 1
    return (
        f"sentinel service {service}: master {master['ip']}:{master['port']} {state}, {history}; "
        f"{master['num-slaves']} replica(s), {sentinels} sentinel(s), quorum {master['quorum']}"
    )


def parse_sentinel_url(url: str) -> SentinelService:
    """The parts of a `redis+sentinel://` URL; ValueError saying what is wrong with it."""
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    username = password = None
    if credentials:
        user, colon, secret = credentials.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = [_host_port(item) for item in hosts.split(",")]
    service = unquote(parts.path.strip("/"))
    if not service or "/" in service:
        raise ValueError(f"{SENTINEL_SCHEME} URL needs the master's service name as its path (…/mymaster)")
    db = 0
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name != "db":
            raise ValueError(f"{SENTINEL_SCHEME} URL: unknown option {name!r} (only db is understood)")
        if not value.isdigit():
            raise ValueError(f"{SENTINEL_SCHEME} URL: db must be a number, not {value!r}")
        db = int(value)
    return SentinelService(sentinels, service, db, username, password)


def _host_port(item: str) -> tuple[str, int]:
    if not item:
        raise ValueError(f"{SENTINEL_SCHEME} URL needs sentinel addresses as host:port[,host:port...]")
    if item.startswith("["):  # [::1]:26379
        host, _, rest = item[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = item.partition(":")
    if not host:
        raise ValueError(f"{SENTINEL_SCHEME} URL: sentinel address {item!r} has no host")
    if not port:
        return host, DEFAULT_SENTINEL_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{SENTINEL_SCHEME} URL: sentinel address {item!r} has no valid port")
    return host, int(port)


def _redacted(url: str) -> str:
    """The URL without credentials, for messages and logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
