"""Change notifications from Redis pub/sub, for the replica agent (docs/ROLLBACK.md R16)."""

from __future__ import annotations

import logging
import random
import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from gatewayd.control.redis_target import RedisTarget

log = logging.getLogger("gatewayd.redis")

CONNECT_TIMEOUT_S = 2.0
RECONNECT_MIN_S = 0.05
RECONNECT_MAX_S = 1.0


class RedisSubscription:
    """Change hints for one thread (R16: pub/sub is a hint, the pointers are the truth).

    `wait(timeout)` is True when a flip was announced or the subscription was (re)made:
    messages published while disconnected are lost, so after a True the caller re-reads.
    Any error drops the connection; it is remade with jittered exponential backoff. A PING
    every `ping_interval_s` must be answered before the next one is due, so a half-open
    connection is dropped within two intervals. While Redis is unreachable, `wait` may
    overrun its timeout by up to the connect timeout.
    """

    def __init__(self, target: RedisTarget, channel: str, ping_interval_s: float):
        # Its own client without retries: redis-py would otherwise resubscribe silently
        # and hide the reconnect, and with it the messages lost in between. Behind
        # sentinels, each (re)subscription asks them for the master, so it follows a failover.
        self._redis = target.client(
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=CONNECT_TIMEOUT_S,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
        )
        self._where = target.where  # the URL without credentials
        self._channel = channel
        self._ping_interval_s = ping_interval_s
        self._pubsub: redis.client.PubSub | None = None
        self._fresh = False  # (re)subscribed since the last True
        self._backoff_s = RECONNECT_MIN_S
        self._retry_at = 0.0
        self._ping_due = 0.0
        self._pong_pending = False
        self._connect()

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if self._pubsub is None and time.monotonic() >= self._retry_at:
                self._connect()
            if self._fresh:
                self._fresh = False
                return True
            now = time.monotonic()
            if now >= deadline:
                return False
            pubsub = self._pubsub
            if pubsub is None:
                time.sleep(max(0.0, min(deadline, self._retry_at) - now))
                continue
            try:
                return self._receive(pubsub, deadline)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                log.warning("change notifications from %s lost (%s); reconnecting", self._where, exc)
                self._drop()

    def close(self) -> None:
        if self._pubsub is not None:
            self._pubsub.close()
            self._pubsub = None
        self._redis.close()

    def _connect(self) -> None:
        """Subscribes and waits for Redis to confirm: only then is no later flip missed."""
        pubsub = self._redis.pubsub()
        try:
            pubsub.subscribe(self._channel)
            _await_confirmation(pubsub)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            pubsub.close()
            # warn once per outage, not on every retry
            (log.warning if self._backoff_s == RECONNECT_MIN_S else log.debug)(
                "cannot subscribe to change notifications at %s (%s); retrying", self._where, exc
            )
            self._retry_at = time.monotonic() + self._backoff_s * random.uniform(0.5, 1.0)
            self._backoff_s = min(self._backoff_s * 2, RECONNECT_MAX_S)
            return
        self._pubsub = pubsub
        self._fresh = True
        self._backoff_s = RECONNECT_MIN_S
        self._ping_due = time.monotonic() + self._ping_interval_s
        self._pong_pending = False

    def _receive(self, pubsub: redis.client.PubSub, deadline: float) -> bool:
        """Reads until a flip is announced (True) or the deadline (False), pinging on the way."""
        while True:
            message = pubsub.get_message(timeout=max(0.0, min(deadline, self._ping_due) - time.monotonic()))
            if message is not None:
                if message["type"] == "message":
                    self._drain(pubsub)
                    return True
                if message["type"] == "pong":
                    self._pong_pending = False
                continue
            now = time.monotonic()
            if now >= self._ping_due:
                if self._pong_pending:
                    raise redis.TimeoutError(f"no answer to PING within {self._ping_interval_s}s")
                pubsub.ping()
                self._pong_pending = True
                self._ping_due = now + self._ping_interval_s
            elif now >= deadline:
                return False

    def _drain(self, pubsub: redis.client.PubSub) -> None:
        """Consumes what is already buffered, so a burst of flips wakes the caller once."""
        while (message := pubsub.get_message(timeout=0)) is not None:
            if message["type"] == "pong":
                self._pong_pending = False

    def _drop(self) -> None:
        assert self._pubsub is not None  # wait() drops only the subscription that just failed
        self._pubsub.close()
        self._pubsub = None
        self._retry_at = time.monotonic()


def _await_confirmation(pubsub: redis.client.PubSub) -> None:
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while (left := deadline - time.monotonic()) > 0:
        message = pubsub.get_message(timeout=left)
        if message is not None and message["type"] == "subscribe":
            return
    raise redis.TimeoutError("SUBSCRIBE was not confirmed")
