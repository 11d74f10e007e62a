"""The shared control store: one Redis for replicas on many hosts (docs/ROLLBACK.md R2, R4, R16).

It has the interface and semantics of `LocalStore`. Every multi-key write is one Lua
script, so it lands whole or not at all, and every time it records comes from the Redis
clock (TIME inside the script), so hosts with skewed clocks still agree on order and on
the barrier's liveness window. Redis must persist (AOF) and must not evict (`noeviction`,
the default): versions and change records are kept forever.

Key layout, under `<ns>:` (namespace, default "gatewayd"); a "stamped" value is
`<redis time> <JSON body>`, the body being the record without that time:

    identity              string  {epoch, created_at} JSON, written with the first versions (R17)
    version-id:<domain>   string  last version id of the domain (INCR)
    versions:<domain>     hash    id -> stamped {digest, name, actor, reason}, never overwritten
    documents:<domain>    hash    id -> the document bytes as pushed, never overwritten
    pointers              hash    "<domain>/<scope>" -> "<version> <change id>"
    changes               list    element N-1 is change N: stamped {actor, reason, kind, items}
    acks:<change id>      hash    replica -> stamped {ok, error}
    replicas              hash    name -> stamped {pid, host, started_at, applied_change, versions}

The change list is the change-id sequence: only the flip script appends, so its length
is the last change id and `changes(since)` is one LRANGE. Each flip PUBLISHes its id on
the channel `<ns>:changed`. Every write of history first checks, in its script, that
`identity` is still the epoch the caller checked its watermark against: a store wiped
between that check and the write is never given a version or change.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, cast

import msgspec
import redis
from redis.backoff import ExponentialBackoff
from redis.client import Pipeline
from redis.commands.core import Script
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError

from gatewayd.control.documents import DOMAINS
from gatewayd.control.keys import RuntimeKey
from gatewayd.control.model import (
    Ack,
    Change,
    ChangeItem,
    ConflictError,
    Pointer,
    Replica,
    StoreDump,
    StoreHead,
    StoreIdentity,
    StoreLostError,
    StoreUnavailableError,
    VersionInfo,
)
from gatewayd.control.redis_scripts import ADD_VERSION, FLIP, SEED, STAMP
from gatewayd.control.redis_subscription import CONNECT_TIMEOUT_S, RedisSubscription
from gatewayd.control.redis_target import RedisTarget
from gatewayd.control.redis_values import (
    AckBody,
    ChangeBody,
    ReplicaBody,
    VersionBody,
    candidate_arg,
    id_arg,
    parse_candidate,
    stamped,
    unstamp,
    version_info,
)

log = logging.getLogger("gatewayd.redis")

# A command whose answer takes longer than SOCKET_TIMEOUT_S fails: a half-open connection
# is found by its first command, and an idle one by a PING (answer awaited) before reuse.
SOCKET_TIMEOUT_S = 3.0
HEALTH_CHECK_INTERVAL_S = 5
# Connection errors (refused, reset, closed) are retried briefly; timeouts are not, since
# the command may have run. A replayed write is harmless: a flip's compare-and-set fails.
COMMAND_RETRY = Retry(ExponentialBackoff(cap=0.2, base=0.05), 1, supported_errors=(redis.ConnectionError,))
# Behind Sentinel, how long a write of history waits for a replica to confirm it.
REPLICA_WAIT_MS = 1000


def _guarded(method):
    """Turns a lost connection into StoreUnavailableError, a one-line message for operators."""

    @functools.wraps(method)
    def wrapper(self: RedisStore, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except redis.AuthenticationError:
            raise StoreUnavailableError(
                f"control store {self.where}: authentication failed; check the user and password in the URL"
            ) from None
        except MasterNotFoundError as exc:  # when the sentinels refuse us, say why in our words
            said = self._target.silence(CONNECT_TIMEOUT_S) or str(exc)
            raise StoreUnavailableError(f"control store {self.where}: {said}") from exc
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailableError(f"control store {self.where}: {exc}") from exc

    return wrapper


class RedisStore:
    """Redis-backed store (a `ControlStore`); thread-safe (a connection pool), one per process."""

    def __init__(self, url: str, namespace: str = "gatewayd"):
        self._target = RedisTarget(url)
        self._where = self._target.where
        self._ns = namespace
        self._channel = f"{namespace}:changed"
        self._redis = self._target.client(
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_keepalive=True,
            health_check_interval=HEALTH_CHECK_INTERVAL_S,
            retry=COMMAND_RETRY,
        )
        self._add_version = self._redis.register_script(ADD_VERSION)
        self._flip = self._redis.register_script(FLIP)
        self._seed = self._redis.register_script(SEED)
        self._stamp = self._redis.register_script(STAMP)
        self._unconfirmed = False  # the last write behind Sentinel had no replica confirm it

    @property
    def where(self) -> str:
        """The URL without its credentials."""
        return self._where

    def close(self) -> None:
        self._redis.close()
        self._target.close()

    @_guarded
    def durability_problems(self) -> tuple[list[str], list[str]]:
        """(refusals, warnings) about this Redis as a keeper of versions and change records.

        Read from INFO, which managed Redis allows where CONFIG is often disabled. An
        `allkeys-*` eviction policy may drop any of our keys under memory pressure, so it
        is refused; `volatile-*` only evicts keys with a TTL, and we set none. Without AOF,
        a Redis crash loses every change since its last RDB snapshot: a warning, since a
        deployment may accept that (RDB on a schedule, replicas with failover). Behind
        Sentinel, a master without a connected replica is warned about too.
        """
        memory = self._redis.info("memory")
        persistence = self._redis.info("persistence")
        policy = str(memory.get("maxmemory_policy", "noeviction"))
        refusals, warnings = [], []
        if policy.startswith("allkeys-"):
            refusals.append(
                f"control store {self.where}: maxmemory-policy is {policy}, so Redis may evict versions and "
                "change records; set it to noeviction (or a volatile-* policy)"
            )
        if not persistence.get("aof_enabled"):
            warnings.append(
                f"control store {self.where}: appendonly is off, so a Redis crash loses the changes since its "
                "last snapshot; set appendonly yes"
            )
        if self._target.sentinel is not None and not self._redis.info("replication").get("connected_slaves"):
            warnings.append(
                f"control store {self.where}: the master has no connected replica, so a failover would "
                "promote none or one that missed writes"
            )
        return refusals, warnings

    def topology(self) -> str:
        """Behind Sentinel, what the sentinels say of the master (never raises); else empty."""
        return self._target.topology(CONNECT_TIMEOUT_S)

    def _confirmed(self, queue: Callable[[Pipeline], object]) -> Any:
        """Runs the write that `queue` puts in a pipeline and returns its answer. Behind
        Sentinel, WAIT for one replica follows on the same connection, so what the caller
        is told was stored survives a failover; when no replica confirms in time, the
        write stands (on the master alone) and a warning says so, once until a replica
        confirms a write again (a key's creation is two writes, an agent acks often)."""
        pipe = self._redis.pipeline(transaction=False)
        queue(pipe)
        if self._target.sentinel is None:
            return pipe.execute()[0]
        pipe.execute_command("WAIT", 1, REPLICA_WAIT_MS)
        result, confirmed = pipe.execute()
        if not confirmed and not self._unconfirmed:
            log.warning(
                "warning: control store %s: no replica confirmed this write within %d ms; a failover now "
                "would lose it (the store would then be refused as behind)",
                self.where,
                REPLICA_WAIT_MS,
            )
        elif confirmed and self._unconfirmed:
            log.warning("control store %s: a replica confirms writes again", self.where)
        self._unconfirmed = not confirmed
        return result

    def _write_history(self, script: Script, keys: list[str], args: list) -> Any:
        """Runs a script that writes versions or changes, confirmed on a replica."""
        return self._confirmed(lambda pipe: script(keys=keys, args=args, client=pipe))

    def _key(self, *parts: object) -> str:
        return ":".join((self._ns, *map(str, parts)))

    def _hgetall(self, *key: object) -> dict[bytes, bytes]:
        # redis-py types replies as bytes | str whatever decode_responses is; this client
        # keeps the default, so they are bytes.
        return cast(dict[bytes, bytes], self._redis.hgetall(self._key(*key)))

    # -- identity (R17) ----------------------------------------------------------------
    @_guarded
    def head(self) -> StoreHead:
        pipe = self._redis.pipeline(transaction=True)  # one snapshot of the three
        pipe.get(self._key("identity"))
        pipe.llen(self._key("changes"))
        for domain in DOMAINS:
            pipe.get(self._key("version-id", domain))
        identity, last_change, *counters = pipe.execute()
        found = msgspec.json.decode(identity, type=StoreIdentity) if identity else None
        last_versions = {d: int(c) for d, c in zip(DOMAINS, counters, strict=True) if c is not None}
        return StoreHead(found, last_change, last_versions)

    @_guarded
    def seed(self, dump: StoreDump) -> bool:
        """Writes a whole history into a store that has none, in one script; False (nothing
        written) when any of its keys exists. Times are the dump's own."""
        keys = [self._key("identity"), self._key("changes"), self._key("pointers"), self._key("runtime-keys")]
        for domain in DOMAINS:
            keys += [self._key("version-id", domain), self._key("versions", domain), self._key("documents", domain)]
        slot = {key: n for n, key in enumerate(keys, 1)}
        last = dump.changes[-1].id if dump.changes else 0
        args: list[str | bytes | int] = [self._channel, str(last)]
        args += ["SET", slot[self._key("identity")], "", msgspec.json.encode(dump.identity)]
        for v in dump.versions:
            i = v.info
            meta = msgspec.json.encode(VersionBody(i.digest, i.name, i.actor, i.reason))
            args += ["HSET", slot[self._key("versions", i.domain)], str(i.id), stamped(i.created_at, meta)]
            args += ["HSET", slot[self._key("documents", i.domain)], str(i.id), v.document]
        for domain, counter in dump.last_versions.items():
            args += ["SET", slot[self._key("version-id", domain)], "", str(counter)]
        for c in dump.changes:
            body = msgspec.json.encode(ChangeBody(c.actor, c.reason, c.kind, c.items))
            args += ["RPUSH", slot[self._key("changes")], "", stamped(c.at, body)]
        for p in dump.pointers:
            value = f"{p.version} {p.change_id}" + (f" {candidate_arg(p.candidate)}" if p.candidate else "")
            args += ["HSET", slot[self._key("pointers")], f"{p.domain}/{p.scope}", value]
        for k in dump.keys:
            args += ["HSET", slot[self._key("runtime-keys")], k.name, msgspec.json.encode(k)]
        return bool(self._write_history(self._seed, keys, args))

    @_guarded
    def claim_identity(self, identity: StoreIdentity) -> bool:
        """Gives a store from before identities its epoch; False if it has one already."""
        identity_json = msgspec.json.encode(identity)
        return bool(self._confirmed(lambda pipe: pipe.set(self._key("identity"), identity_json, nx=True)))

    def _lost(self, expected: str, found: bytes) -> StoreLostError:
        what = f"epoch {found.decode()}" if found else "no identity"
        return StoreLostError(
            f"control store at {self.where}: expected epoch {expected}, found {what}; nothing written"
        )

    # -- versions ---------------------------------------------------------------------
    @_guarded
    def add_version(
        self, domain: str, digest: str, name: str, document: bytes, actor: str, reason: str, *, epoch: str
    ) -> int:
        """Stores the next version of `domain`, if the store is still epoch `epoch` (R17)."""
        keys = [self._key("version-id", domain), self._key("versions", domain), self._key("documents", domain)]
        keys.append(self._key("identity"))
        meta = msgspec.json.encode(VersionBody(digest, name, actor, reason))
        result = self._write_history(self._add_version, keys, [meta, document, epoch])
        if isinstance(result, list):
            raise self._lost(epoch, result[1])
        return int(result)

    @_guarded
    def version(self, domain: str, version_id: int) -> tuple[VersionInfo, bytes] | None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.hget(self._key("versions", domain), version_id)
        pipe.hget(self._key("documents", domain), version_id)
        meta, document = pipe.execute()
        if meta is None or document is None:
            return None
        return version_info(domain, version_id, meta), document

    @_guarded
    def versions(self, domain: str) -> list[VersionInfo]:
        stored = self._hgetall("versions", domain)
        infos = [version_info(domain, int(version_id), meta) for version_id, meta in stored.items()]
        return sorted(infos, key=lambda info: info.id)

    # -- pointers and changes ---------------------------------------------------------
    @_guarded
    def pointers(self) -> list[Pointer]:
        out = []
        for field, value in self._hgetall("pointers").items():
            domain, scope = field.decode().split("/", 1)
            version, change_id, *candidate = value.split(b" ", 2)
            out.append(Pointer(domain, scope, int(version), int(change_id), parse_candidate(b"".join(candidate))))
        return sorted(out, key=lambda p: (p.domain, p.scope))

    @_guarded
    def last_change_id(self) -> int:
        return self._redis.llen(self._key("changes"))

    @_guarded
    def flip(self, items: list[ChangeItem], actor: str, reason: str, kind: str, *, epoch: str) -> Change:
        """Moves every pointer in `items` in one script, if each still holds `prev` and
        `prev_candidate` and the store is still epoch `epoch`."""
        args: list[str | bytes] = [msgspec.json.encode(ChangeBody(actor, reason, kind, items)), self._channel, epoch]
        for item in items:
            state = f"{id_arg(item.prev)}|{candidate_arg(item.prev_candidate)}"
            args += [f"{item.domain}/{item.scope}", state, id_arg(item.new), candidate_arg(item.candidate)]
        keys = [self._key("pointers"), self._key("changes"), self._key("identity")]
        result = self._write_history(self._flip, keys, args)
        if result[0] == b"lost":
            raise self._lost(epoch, result[1])
        if result[0] == 0:
            item = items[result[1] - 1]
            current = int(result[2]) if result[2] else None
            if current != item.prev:
                raise ConflictError.moved(item.domain, item.scope, current, item.prev)
            candidate = parse_candidate(result[3])
            raise ConflictError.candidate_moved(item.domain, item.scope, candidate, item.prev_candidate)
        return Change(int(result[0]), float(result[1]), actor, reason, kind, list(items))

    # -- run-time caller keys (gatewayd.control.keys) -----------------------------------
    @_guarded
    def add_key(self, key: RuntimeKey) -> bool:
        record = msgspec.json.encode(key)
        return bool(self._confirmed(lambda pipe: pipe.hsetnx(self._key("runtime-keys"), key.name, record)))

    @_guarded
    def set_key(self, key: RuntimeKey) -> None:
        record = msgspec.json.encode(key)
        self._confirmed(lambda pipe: pipe.hset(self._key("runtime-keys"), key.name, record))

    @_guarded
    def runtime_keys(self) -> list[RuntimeKey]:
        found = self._hgetall("runtime-keys")
        return [msgspec.json.decode(found[name], type=RuntimeKey) for name in sorted(found)]

    # -- spend counters (budgets, gatewayd.server.budgets) -------------------------------
    @_guarded
    def add_spend(self, increments: dict[str, tuple[float, int]]) -> None:
        """Adds to the counters. Not confirmed on a replica: every gateway sends these each
        budget exchange, an increment cannot be replayed without counting it twice, and a
        failover loses only the replication lag's worth (a budget counts a few answers
        short); a WAIT would stall the exchange up to a second whenever no replica answers."""
        pipe = self._redis.pipeline(transaction=True)
        for counter, (cost, tokens) in increments.items():
            pipe.hincrbyfloat(self._key("spend-cost"), counter, cost)
            pipe.hincrby(self._key("spend-tokens"), counter, tokens)
        pipe.execute()

    @_guarded
    def spend(self, counters: list[str]) -> dict[str, tuple[float, int]]:
        if not counters:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        pipe.hmget(self._key("spend-cost"), counters)
        pipe.hmget(self._key("spend-tokens"), counters)
        costs, tokens = pipe.execute()
        return {c: (float(v), int(t or 0)) for c, v, t in zip(counters, costs, tokens, strict=True) if v is not None}

    @_guarded
    def changes(self, since_id: int = 0, domain: str | None = None) -> list[Change]:
        since_id = max(since_id, 0)
        # bytes, as in _hgetall
        records = cast(list[bytes], self._redis.lrange(self._key("changes"), since_id, -1))
        out = []
        for offset, record in enumerate(records):
            at, body = unstamp(record, ChangeBody)
            out.append(Change(since_id + offset + 1, at, body.actor, body.reason, body.kind, body.items))
        if domain:
            out = [c for c in out if any(i.domain == domain for i in c.items)]
        return out

    # -- replicas and acknowledgements ------------------------------------------------
    @_guarded
    def heartbeat(self, replica: Replica) -> None:
        """Records the replica; `heartbeat_at` becomes the Redis time of this call. Not
        confirmed on a replica: the next heartbeat, a second later, says it all again."""
        r = replica
        body = ReplicaBody(r.pid, r.host, r.started_at, r.applied_change, r.versions, r.mark, r.traffic)
        self._stamp(keys=[self._key("replicas")], args=[replica.name, msgspec.json.encode(body)])

    @_guarded
    def replicas(self) -> list[Replica]:
        out = []
        for name, value in self._hgetall("replicas").items():
            at, b = unstamp(value, ReplicaBody)
            out.append(
                Replica(name.decode(), b.pid, b.host, b.started_at, at, b.applied_change, b.versions, b.mark, b.traffic)
            )
        return sorted(out, key=lambda r: r.name)

    @_guarded
    def remove_replica(self, name: str) -> None:
        self._redis.hdel(self._key("replicas"), name)

    @_guarded
    def ack(self, ack: Ack) -> None:
        """Records the answer; `at` becomes the Redis time of this call, the clock of the change.
        Confirmed on a replica: a flip's barrier and its history count these answers."""
        body = msgspec.json.encode(AckBody(ack.ok, ack.error))
        keys = [self._key("acks", ack.change_id)]
        self._confirmed(lambda pipe: self._stamp(keys=keys, args=[ack.replica, body], client=pipe))

    @_guarded
    def acks(self, change_id: int) -> list[Ack]:
        out = []
        for replica, value in self._hgetall("acks", change_id).items():
            at, body = unstamp(value, AckBody)
            out.append(Ack(change_id, replica.decode(), body.ok, body.error, at))
        return sorted(out, key=lambda a: a.replica)

    def subscribe(self, *, check_interval_s: float | None = None) -> RedisSubscription:
        """Pings every `check_interval_s` (default 1 s) to notice a half-open connection."""
        return RedisSubscription(self._target, self._channel, 1.0 if check_interval_s is None else check_interval_s)
