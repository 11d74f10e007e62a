"""Which Redis the control store talks to: one server (`redis://`, `rediss://`, `unix://`),
or whichever server Redis Sentinel names master of a service
(`redis+sentinel://[user:password@]host:port[,host:port...]/service[?option=value&...]`),
so that a failover is followed without a config change or a restart.

The credentials before `@` are the master's; sentinels that require a password of their
own get `sentinel_username` / `sentinel_password` (the names redis-py's `sentinel_kwargs`,
Spring and go-redis use). `rediss+sentinel://` speaks TLS to the sentinels and to the
master alike, with redis-py's `ssl_*` options of `rediss://` applied to both.
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import msgspec
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

SENTINEL_SCHEME = "redis+sentinel"
TLS_SENTINEL_SCHEME = "rediss+sentinel"
SENTINEL_SCHEMES = (SENTINEL_SCHEME, TLS_SENTINEL_SCHEME)
DEFAULT_SENTINEL_PORT = 26379
# The TLS options of redis-py's rediss:// URLs; given to sentinel and master connections.
TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
CERT_REQS = ("none", "optional", "required")
# A sentinel that does not answer (or refuses us) is not retried: the next one is asked.
NO_RETRY = Retry(NoBackoff(), 0)


class SentinelService(msgspec.Struct, frozen=True):
    """A master found through sentinels, as named in a `redis+sentinel://` URL."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    tls: dict[str, str] | None = None  # rediss+sentinel: the ssl_* options given (maybe none)

    def sentinel_options(self) -> dict[str, Any]:
        """Connection options for the sentinels: their credentials, and TLS as for the master."""
        options: dict[str, Any] = {**self.tls_options()}
        if self.sentinel_username is not None:
            options["username"] = self.sentinel_username
        if self.sentinel_password is not None:
            options["password"] = self.sentinel_password
        return options

    def tls_options(self) -> dict[str, Any]:
        return {} if self.tls is None else {"ssl": True, **self.tls}


class RedisTarget:
    """Makes clients for one URL; every client of a sentinel target asks the sentinels
    for the master when it connects, so it reaches the promoted replica after a failover."""

    def __init__(self, url: str):
        self.url = url
        self.sentinel = parse_sentinel_url(url) if urlsplit(url).scheme in SENTINEL_SCHEMES else None
        self.where = _redacted(url)
        self._managers: list[Sentinel] = []  # one per client, each with its sentinel connections

    def client(self, **options: Any) -> redis.Redis:
        """A client with `options` (timeouts, retry, ...) for its connections to the master."""
        s = self.sentinel
        if s is None:
            return redis.Redis.from_url(self.url, **options)
        sockets = {k: v for k, v in options.items() if k.startswith("socket_")}
        manager = Sentinel(s.sentinels, sentinel_kwargs={**sockets, **s.sentinel_options(), "retry": NO_RETRY})
        self._managers.append(manager)
        master = {"db": s.db, "username": s.username, "password": s.password, **s.tls_options()}
        return manager.master_for(s.service, **master, **options)

    def close(self) -> None:
        """Closes the connections to the sentinels (each client closes its own to the master)."""
        for manager in self._managers:
            manager.close()
        self._managers.clear()

    def topology(self, timeout_s: float) -> str:
        """What the sentinels say of the master, in one line (empty for one server): where
        it is, whether it is down or was failed over, its replicas and the sentinels.
        Asks the sentinels only, so it answers while the master is unreachable."""
        if self.sentinel is None:
            return ""
        master, errors = self._ask_sentinels(self.sentinel, timeout_s)
        if master is None:
            return f"sentinel service {self.sentinel.service}: no sentinel answers ({errors})"
        return _describe(self.sentinel.service, master)

    def silence(self, timeout_s: float) -> str:
        """Why no master can be found when no sentinel answers (a password or certificate
        refused, none reachable), in one line; empty when one does (or there are none)."""
        if self.sentinel is None:
            return ""
        master, errors = self._ask_sentinels(self.sentinel, timeout_s)
        return (
            ""
            if master is not None
            else f"no master found for {self.sentinel.service!r}: no sentinel answers ({errors})"
        )

    @staticmethod
    def _ask_sentinels(s: SentinelService, timeout_s: float) -> tuple[dict[str, Any] | None, str]:
        """(SENTINEL MASTER of the first sentinel that answers, or None; what the others said)."""
        errors: dict[str, list[str]] = {}  # what went wrong -> the sentinels it went wrong with
        for host, port in s.sentinels:
            options = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s, **s.sentinel_options()}
            client = redis.Redis(host=host, port=port, retry=NO_RETRY, **options)
            try:
                return cast(dict[str, Any], client.sentinel_master(s.service)), ""
            except redis.AuthenticationError as exc:  # a ConnectionError: caught first to say so
                error = (
                    "the sentinel requires a password: give sentinel_password"
                    if s.sentinel_password is None
                    else f"authentication failed ({exc}); check sentinel_password"
                )
                errors.setdefault(error, []).append(f"{host}:{port}")
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                errors.setdefault(str(exc), []).append(f"{host}:{port}")
            except redis.ResponseError as exc:  # this sentinel does not monitor the service
                errors.setdefault(str(exc), []).append(f"{host}:{port}")
            finally:
                client.close()
        return None, "; ".join(f"{', '.join(where)}: {error}" for error, where in errors.items())


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
    """The parts of a `redis+sentinel://` or `rediss+sentinel://` URL; ValueError saying
    what is wrong with it."""
    parts = urlsplit(url)
    scheme = parts.scheme
    credentials, _, hosts = parts.netloc.rpartition("@")
    username = password = None
    if credentials:
        user, colon, secret = credentials.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = [_host_port(scheme, item) for item in hosts.split(",")]
    service = unquote(parts.path.strip("/"))
    if not service or "/" in service:
        raise ValueError(f"{scheme} URL needs the master's service name as its path (…/mymaster)")
    found = SentinelService(
        sentinels, service, 0, username, password, tls={} if scheme == TLS_SENTINEL_SCHEME else None
    )
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        found = _with_option(found, scheme, name, value)
    return found


def _with_option(s: SentinelService, scheme: str, name: str, value: str) -> SentinelService:
    """`s` with one `?name=value` of the URL applied; ValueError naming an unknown option."""
    if name == "db":
        if not value.isdigit():
            raise ValueError(f"{scheme} URL: db must be a number, not {value!r}")
        return msgspec.structs.replace(s, db=int(value))
    if name in ("sentinel_username", "sentinel_password"):
        return msgspec.structs.replace(s, **{name: value})
    if name in TLS_OPTIONS:
        if s.tls is None:
            raise ValueError(f"{scheme} URL: option {name!r} needs TLS: use {TLS_SENTINEL_SCHEME}://")
        if name == "ssl_cert_reqs" and value not in CERT_REQS:
            raise ValueError(f"{scheme} URL: ssl_cert_reqs must be one of {', '.join(CERT_REQS)}, not {value!r}")
        return msgspec.structs.replace(s, tls={**s.tls, name: value})
    known = ", ".join(("db", "sentinel_username", "sentinel_password", *(TLS_OPTIONS if s.tls is not None else ())))
    raise ValueError(f"{scheme} URL: unknown option {name!r} (understood: {known})")


def _host_port(scheme: str, item: str) -> tuple[str, int]:
    if not item:
        raise ValueError(f"{scheme} URL needs sentinel addresses as host:port[,host:port...]")
    if item.startswith("["):  # [::1]:26379
        host, _, rest = item[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = item.partition(":")
    if not host:
        raise ValueError(f"{scheme} URL: sentinel address {item!r} has no host")
    if not port:
        return host, DEFAULT_SENTINEL_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{scheme} URL: sentinel address {item!r} has no valid port")
    return host, int(port)


def _redacted(url: str) -> str:
    """The URL without credentials, for messages and logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
