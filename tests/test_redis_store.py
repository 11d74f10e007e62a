"""The control-store contract, against the embedded SQLite store and a real redis-server,
and the Redis notifications surviving restarts, dropped and half-open connections."""

from __future__ import annotations

import inspect
import os
import signal
import sqlite3
import threading
import time
import uuid
from urllib.parse import urlsplit

import pytest
import redis

from gatewayd import config
from gatewayd.control.local_store import LocalStore
from gatewayd.control.model import (
    Ack,
    Candidate,
    Change,
    ChangeItem,
    ConflictError,
    Pointer,
    Replica,
    StoreDump,
    StoredVersion,
    StoreHead,
    StoreIdentity,
    StoreLostError,
    StoreUnavailableError,
    VersionInfo,
    Watermark,
)
from gatewayd.control.redis_store import RedisStore
from gatewayd.control.stores import ControlStore, open_store
from support.procs import free_port, stop_process
from support.redis import start_redis

DOC = b"rules:\n  - deny: card\x00\xff\r\n  \n"  # stored byte for byte, not as text
EPOCH = "0" * 32  # every write names the epoch it expects the store to have (R17)


@pytest.fixture(scope="module")
def redis_url():
    url, proc = start_redis()
    yield url
    stop_process(proc)


@pytest.fixture(params=["local", "redis"])
def open_(request, tmp_path):
    """Opens another handle on one store, as another process would; closes them all."""
    if request.param == "local":
        kind, args = LocalStore, (tmp_path,)
    else:
        kind, args = RedisStore, (request.getfixturevalue("redis_url"), f"t{uuid.uuid4().hex[:8]}")
    handles = []

    def opener():
        handles.append(kind(*args))
        return identified(handles[-1])

    yield opener
    for handle in handles:
        handle.close()


@pytest.fixture
def store(open_):
    return open_()


def identified(store):
    """The store with an identity, as bootstrap leaves it (once; later handles find it)."""
    store.seed(StoreDump(StoreIdentity(EPOCH, time.time()), [], {}, [], []))
    return store


def activate(store, domain: str, new: int, prev: int | None = None, actor: str = "alice"):
    return store.flip([ChangeItem(domain, "default", prev, new)], actor, f"{domain} to {new}", "activate", epoch=EPOCH)


# -- the contract, for both stores -----------------------------------------------------


def test_versions_are_immutable_and_numbered_per_domain(store):
    before = time.time()
    assert store.add_version("policy", "sha256:a", "p1", DOC, "alice", "first", epoch=EPOCH) == 1
    assert store.add_version("policy", "sha256:a", "p1", DOC, "alice", "again", epoch=EPOCH) == 2
    assert store.add_version("routing", "sha256:b", "r1", b"{}", "bob", "routes", epoch=EPOCH) == 1

    info, data = store.version("policy", 1)
    assert data == DOC
    assert (info.domain, info.id, info.digest, info.name, info.actor, info.reason) == (
        "policy",
        1,
        "sha256:a",
        "p1",
        "alice",
        "first",
    )
    assert before - 1 <= info.created_at <= time.time() + 1
    assert [v.id for v in store.versions("policy")] == [1, 2]
    assert store.versions("policy")[1].reason == "again"
    assert store.version("policy", 3) is None
    assert store.version("config", 1) is None
    assert store.versions("config") == []


def test_flip_moves_pointers_and_records_the_change(store):
    assert store.pointers() == [] and store.last_change_id() == 0 and store.changes() == []
    before = time.time()
    change = activate(store, "policy", 1)
    assert change.id == 1 and change.kind == "activate" and change.actor == "alice"
    assert before - 1 <= change.at <= time.time() + 1
    assert store.pointers() == [Pointer("policy", "default", 1, 1)]
    assert store.last_change_id() == 1
    assert store.changes() == [change]

    unset = store.flip([ChangeItem("policy", "default", 1, None)], "bob", "switch off", "rollback", epoch=EPOCH)
    assert unset.id == 2 and store.pointers() == []
    assert store.changes(since_id=1) == [unset]


def test_lost_compare_and_set_changes_nothing(store):
    activate(store, "policy", 1)
    activate(store, "policy", 2, prev=1)
    state = (store.pointers(), store.changes())
    with pytest.raises(ConflictError, match=r"policy/default moved to version 2 \(expected 1\)"):
        activate(store, "policy", 3, prev=1)
    with pytest.raises(ConflictError, match=r"moved to version 2 \(expected None\)"):
        activate(store, "policy", 3)
    assert (store.pointers(), store.changes()) == state
    assert store.last_change_id() == 2


def test_multi_item_flip_is_all_or_nothing(store):
    bundle = [ChangeItem(d, "default", None, 1) for d in ("policy", "routing", "config")]
    first = store.flip(bundle, "alice", "bootstrap", "bootstrap", epoch=EPOCH)
    stale = [
        ChangeItem("policy", "default", 1, 2),
        ChangeItem("routing", "default", 7, 2),  # lost: routing is at 1
        ChangeItem("config", "default", 1, 2),
    ]
    with pytest.raises(ConflictError, match="routing/default moved to version 1"):
        store.flip(stale, "alice", "bundle 2", "bundle", epoch=EPOCH)
    assert {(p.domain, p.version, p.change_id) for p in store.pointers()} == {
        (d, 1, first.id) for d in ("policy", "routing", "config")
    }

    second = store.flip(
        [ChangeItem(i.domain, i.scope, 1, 2) for i in stale], "alice", "bundle 2", "bundle", epoch=EPOCH
    )
    assert {(p.version, p.change_id) for p in store.pointers()} == {(2, second.id)}
    assert store.changes() == [first, second]


def test_changes_are_ordered_and_filter_by_domain(store):
    activate(store, "policy", 1)
    activate(store, "routing", 1)
    both = [ChangeItem("policy", "tenant-a/x", None, 1), ChangeItem("config", "default", None, 1)]
    store.flip(both, "alice", "tenant policy and config", "bundle", epoch=EPOCH)
    activate(store, "policy", 2, prev=1)
    assert [c.id for c in store.changes()] == [1, 2, 3, 4]
    assert [c.id for c in store.changes(since_id=2)] == [3, 4]
    assert store.changes(since_id=4) == []
    assert [c.id for c in store.changes(domain="policy")] == [1, 3, 4]
    assert [c.id for c in store.changes(since_id=1, domain="config")] == [3]
    assert Pointer("policy", "tenant-a/x", 1, 3) in store.pointers()  # a scope may contain '/'
    ats = [c.at for c in store.changes()]
    assert ats == sorted(ats)


def test_concurrent_flips_have_one_winner(open_):
    open_()
    stores = [open_() for _ in range(8)]
    results: list[object] = []
    start = threading.Barrier(len(stores))

    def contend(store, new):
        start.wait()
        try:
            results.append(activate(store, "policy", new))
        except ConflictError as exc:
            results.append(exc)

    threads = [threading.Thread(target=contend, args=(s, i + 1)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    winners = [r for r in results if not isinstance(r, ConflictError)]
    assert len(results) == 8 and len(winners) == 1
    assert stores[0].changes() == winners
    assert stores[0].pointers()[0].version == winners[0].items[0].new


def test_replicas_and_acks(store):
    now = time.time()
    for applied in (0, 3):
        store.heartbeat(Replica("h1-w1", 11, "h1", now - 5, now, applied, {"policy": applied}))
    store.heartbeat(Replica("h1-w0", 10, "h1", now - 5, now, 3, {}))
    got = store.replicas()
    assert [r.name for r in got] == ["h1-w0", "h1-w1"]
    assert (got[1].pid, got[1].host, got[1].started_at, got[1].applied_change, got[1].versions) == (
        11,
        "h1",
        now - 5,
        3,
        {"policy": 3},
    )
    assert all(abs(r.heartbeat_at - now) < 2 for r in got)
    store.remove_replica("h1-w0")
    assert [r.name for r in store.replicas()] == ["h1-w1"]

    store.ack(Ack(3, "h1-w1", False, "policy v3: line 2: unknown action", now))
    store.ack(Ack(3, "h1-w0", True, "", now))
    store.ack(Ack(3, "h1-w1", True, "", now))  # a later answer replaces the earlier one
    acks = store.acks(3)
    assert [(a.change_id, a.replica, a.ok, a.error) for a in acks] == [(3, "h1-w0", True, ""), (3, "h1-w1", True, "")]
    assert all(abs(a.at - now) < 2 for a in acks)
    assert store.acks(4) == []


def test_head_names_the_identity_and_how_far_history_goes(store):
    assert store.head() == StoreHead(StoreIdentity(EPOCH, store.head().identity.created_at), 0, {})
    store.add_version("policy", "sha256:a", "p1", DOC, "alice", "first", epoch=EPOCH)
    activate(store, "policy", 1)
    assert (store.head().last_change, store.head().last_versions) == (1, {"policy": 1})


def test_a_write_naming_another_epoch_is_refused_and_writes_nothing(store):
    store.add_version("policy", "sha256:a", "p1", DOC, "alice", "first", epoch=EPOCH)
    before = (store.head(), store.versions("policy"), store.changes(), store.pointers())
    with pytest.raises(StoreLostError, match=f"expected epoch other, found epoch {EPOCH}; nothing written"):
        store.add_version("policy", "sha256:b", "p2", DOC, "alice", "second", epoch="other")
    with pytest.raises(StoreLostError, match="expected epoch other"):
        store.flip([ChangeItem("policy", "default", None, 1)], "alice", "go", "activate", epoch="other")
    assert (store.head(), store.versions("policy"), store.changes(), store.pointers()) == before


def test_seed_writes_a_whole_history_once_and_numbers_carry_on_past_it(open_, tmp_path, request):
    store = _bare(open_, tmp_path, request)
    with pytest.raises(StoreLostError, match="found no identity"):
        store.add_version("policy", "sha256:a", "p1", DOC, "alice", "first", epoch=EPOCH)
    info = VersionInfo("policy", 2, "sha256:x", "p2.yaml", 1000.5, "alice", "second")
    changes = [
        Change(1, 1000.0, "restore", "lost", "lost", []),
        Change(2, 1001.25, "bob", "back", "restore", [ChangeItem("policy", "default", None, 2)]),
    ]
    dump = StoreDump(
        StoreIdentity("e1", 999.0),
        [StoredVersion(info, DOC)],
        {"policy": 5},
        changes,
        [Pointer("policy", "default", 2, 2)],
    )
    assert store.seed(dump) is True
    assert store.seed(dump) is False  # a store with history is never seeded over
    assert store.head() == StoreHead(StoreIdentity("e1", 999.0), 2, {"policy": 5})
    assert store.version("policy", 2) == (info, DOC) and store.version("policy", 1) is None
    assert store.changes() == changes and store.pointers() == [Pointer("policy", "default", 2, 2)]
    assert store.add_version("policy", "sha256:y", "p6", DOC, "alice", "next", epoch="e1") == 6
    flipped = store.flip([ChangeItem("policy", "default", 2, 6)], "alice", "go", "activate", epoch="e1")
    assert flipped.id == 3


def test_heartbeats_carry_the_replicas_watermark(store):
    mark = Watermark(EPOCH, 5.0, 7, {"policy": 2, "routing": 1})
    store.heartbeat(Replica("h1-w0", 10, "h1", 1.0, time.time(), 7, {"policy/default": 2}, mark))
    store.heartbeat(Replica("h1-w1", 11, "h1", 1.0, time.time(), 7, {}))
    assert [r.mark for r in store.replicas()] == [mark, None]


def test_a_candidate_moves_with_its_pointer_and_is_compared_too(store):
    activate(store, "routing", 1)
    canary = Candidate(2, 500)
    started = store.flip(
        [ChangeItem("routing", "default", 1, 1, None, canary)], "alice", "canary", "canary", epoch=EPOCH
    )
    assert store.pointers() == [Pointer("routing", "default", 1, started.id, canary)]
    assert store.changes(since_id=1) == [started]
    state = (store.pointers(), store.changes())
    stale = ChangeItem("routing", "default", 1, 1, Candidate(2, 400), Candidate(2, 2500))
    with pytest.raises(ConflictError, match=r"candidate moved to version 2 at 5% \(expected version 2 at 4%\)"):
        store.flip([stale], "bob", "stale share", "canary", epoch=EPOCH)
    with pytest.raises(ConflictError, match=r"candidate moved to version 2 at 5% \(expected none\)"):
        activate(store, "routing", 3, prev=1)  # an activation that did not see the canary
    assert (store.pointers(), store.changes()) == state
    promoted = store.flip([ChangeItem("routing", "default", 1, 2, canary, None)], "alice", "go", "promote", epoch=EPOCH)
    assert store.pointers() == [Pointer("routing", "default", 2, promoted.id)]
    assert store.changes()[-1].items[0].prev_candidate == canary


def test_a_candidate_given_with_an_int_window_still_compares_equal(store):
    """A field given in another type than its own (10 for 10.0) is stored as it reads back,
    so a later compare-and-set naming the candidate it read succeeds."""
    activate(store, "routing", 1)
    given = Candidate(2, 500, ("error_rate > 0.1",), 20, 10)  # type: ignore[arg-type]
    store.flip([ChangeItem("routing", "default", 1, 1, None, given)], "alice", "canary", "canary", epoch=EPOCH)
    [read] = store.pointers()
    held = Candidate(2, 0, ("error_rate > 0.1",), 20, 10.0)
    store.flip([ChangeItem("routing", "default", 1, 1, read.candidate, held)], "auto", "revert", "canary", epoch=EPOCH)
    assert store.pointers()[0].candidate == held


def test_seed_keeps_candidates(open_, tmp_path, request):
    store = _bare(open_, tmp_path, request)
    canary = Candidate(3, 10000)
    items = [ChangeItem("routing", "tenant:acme", None, 2, None, canary)]
    dump = StoreDump(StoreIdentity("e1", 1.0), [], {}, [Change(1, 2.0, "a", "r", "canary", items)],
                     [Pointer("routing", "tenant:acme", 2, 1, canary)])  # fmt: skip
    assert store.seed(dump) is True
    assert store.pointers() == dump.pointers and store.changes() == dump.changes


def test_pointers_come_ordered_by_domain_and_scope(store):
    for domain, scope in (
        ("routing", "tenant:z"),
        ("policy", "tenant:b"),
        ("config", "default"),
        ("policy", "default"),
    ):
        store.flip([ChangeItem(domain, scope, None, 1)], "alice", "set", "activate", epoch=EPOCH)
    assert [(p.domain, p.scope) for p in store.pointers()] == [
        ("config", "default"),
        ("policy", "default"),
        ("policy", "tenant:b"),
        ("routing", "tenant:z"),
    ]


def test_an_identity_is_claimed_once(open_, tmp_path, request):
    store = _bare(open_, tmp_path, request)
    assert store.head().identity is None
    assert store.claim_identity(StoreIdentity("e1", 5.0)) is True
    assert store.claim_identity(StoreIdentity("e2", 6.0)) is False
    assert store.head().identity == StoreIdentity("e1", 5.0)
    assert store.durability_problems() == ([], []) or isinstance(store, RedisStore)


@pytest.mark.parametrize("kind", [LocalStore, RedisStore])
def test_each_store_has_every_method_of_the_contract_with_its_parameters(kind):
    """The same names, parameter names, kinds, defaults and types as `ControlStore`, so
    a caller written against the protocol works on either store."""
    for name, member in vars(ControlStore).items():
        if name.startswith("_"):
            continue
        implemented = getattr(kind, name, None)
        assert implemented is not None, f"{kind.__name__} lacks {name}"
        if isinstance(member, property):
            assert isinstance(implemented, property), f"{kind.__name__}.{name}"
            continue
        expected = list(inspect.signature(member).parameters.values())
        found = list(inspect.signature(implemented).parameters.values())
        assert [(p.name, p.kind, p.default, p.annotation) for p in found] == [
            (p.name, p.kind, p.default, p.annotation) for p in expected
        ], f"{kind.__name__}.{name}"


@pytest.fixture(params=["local", "redis"])
def unavailable(request, tmp_path):
    """(a store that cannot take writes, what the error names, a check that nothing was
    written): the embedded store while another process holds its write lock past the lock
    timeout; Redis with nothing listening."""
    if request.param == "redis":
        store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
        yield store, "control store redis://127.0.0.1:", lambda: None
        store.close()
        return
    setup = identified(LocalStore(tmp_path))
    setup.add_version("policy", "sha256:a", "p1", DOC, "alice", "first", epoch=EPOCH)

    def state():
        return (
            setup.head(),
            setup.versions("policy"),
            setup.changes(),
            setup.pointers(),
            setup.replicas(),
            setup.acks(1),
        )

    before = state()
    holder = sqlite3.connect(setup.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a writer stuck mid-transaction in another process
    store = LocalStore(tmp_path, lock_timeout_s=0.2)

    def unchanged():
        holder.execute("ROLLBACK")
        assert state() == before

    yield store, f"control store {setup.path}: database is locked", unchanged
    for handle in (store, setup, holder):
        handle.close()


def test_a_write_the_store_cannot_take_raises_store_unavailable_and_writes_nothing(unavailable):
    store, names, unchanged = unavailable
    replica = Replica("h1-w0", 10, "h1", 1.0, time.time(), 0, {})
    writes = {
        "seed": lambda: store.seed(StoreDump(StoreIdentity("e9", 1.0), [], {}, [], [])),
        "claim_identity": lambda: store.claim_identity(StoreIdentity("e9", 1.0)),
        "add_version": lambda: store.add_version("policy", "sha256:b", "p2", DOC, "bob", "second", epoch=EPOCH),
        "flip": lambda: activate(store, "policy", 1),
        "heartbeat": lambda: store.heartbeat(replica),
        "remove_replica": lambda: store.remove_replica("h1-w0"),
        "ack": lambda: store.ack(Ack(1, "h1-w0", True, "", time.time())),
    }
    for write in writes.values():
        with pytest.raises(StoreUnavailableError, match=names):
            write()
    unchanged()


def _bare(open_, tmp_path, request):
    """A handle on a store without identity (what a wiped store looks like)."""
    if request.node.callspec.params["open_"] == "local":
        return LocalStore(tmp_path / "bare")
    return RedisStore(request.getfixturevalue("redis_url"), f"t{uuid.uuid4().hex[:8]}")


def test_subscription_wakes_on_a_flip_from_another_handle(open_):
    store, writer = open_(), open_()
    sub = store.subscribe()
    try:
        assert sub.wait(5) is True  # subscribed: the caller reads the pointers once
        assert sub.wait(0.2) is False
        threading.Timer(0.2, activate, (writer, "policy", 1)).start()
        start = time.monotonic()
        assert sub.wait(5) is True
        assert time.monotonic() - start < 1
        assert store.last_change_id() == 1
        assert sub.wait(0.2) is False
    finally:
        sub.close()


def test_open_store_follows_the_redis_url_setting(tmp_path, redis_url):
    path = tmp_path / "gatewayd.toml"
    path.write_text('[providers.p]\nkind = "openai"\nbase_url = "http://127.0.0.1:1"\n')
    local = open_store(config.load(path, environ={}))
    remote = open_store(config.load(path, environ={"GATEWAYD_CONTROL_REDIS_URL": redis_url}))
    try:
        assert isinstance(local, LocalStore) and local.path.parent == tmp_path / "var/control"
        assert isinstance(remote, RedisStore) and remote.last_change_id() >= 0
    finally:
        local.close()
        remote.close()
    with pytest.raises(config.ConfigError, match="control.redis_url"):
        open_store(config.load(path, environ={"GATEWAYD_CONTROL_REDIS_URL": "http://127.0.0.1:1"}))


# -- Redis only -------------------------------------------------------------------------


def test_a_stored_version_is_never_overwritten(redis_url):
    store = identified(RedisStore(redis_url, f"t{uuid.uuid4().hex[:8]}"))
    try:
        store.add_version("policy", "sha256:a", "p1", DOC, "alice", "first", epoch=EPOCH)
        store._redis.set(store._key("version-id", "policy"), 0)  # a counter behind the data
        with pytest.raises(redis.ResponseError, match="version 1 is already stored"):
            store.add_version("policy", "sha256:b", "evil", b"allow: all", "mallory", "overwrite", epoch=EPOCH)
        assert store.version("policy", 1)[1] == DOC
        assert [v.name for v in store.versions("policy")] == ["p1"]
    finally:
        store.close()


def test_auth_url_works_and_a_wrong_password_is_one_clear_line():
    url, proc = start_redis(password="s3cret-pw")
    try:
        store = identified(RedisStore(url))
        assert activate(store, "policy", 1).id == 1
        sub = store.subscribe()
        assert sub.wait(5) is True
        sub.close()
        store.close()
        for bad in (url.replace("s3cret-pw", "wrong"), url.replace(":s3cret-pw@", "")):
            bad_store = RedisStore(bad)
            with pytest.raises(StoreUnavailableError, match="authentication failed; check the user") as caught:
                bad_store.pointers()
            message = str(caught.value)
            assert "\n" not in message and "s3cret" not in message and "redis://127.0.0.1:" in message
            bad_store.close()
    finally:
        stop_process(proc)


def test_tls_url_with_auth(tmp_path):
    url, proc = start_redis(password="s3cret-pw", tls=tmp_path / "tls")
    try:
        assert url.startswith("rediss://")
        store = identified(RedisStore(url))
        sub = store.subscribe()
        assert sub.wait(5) is True
        activate(store, "policy", 1)
        assert sub.wait(5) is True and store.pointers() == [Pointer("policy", "default", 1, 1)]
        sub.close()
        store.close()
        untrusted = RedisStore(url.split("?")[0])  # the system CAs do not know this server
        with pytest.raises(StoreUnavailableError, match="certificate verify failed") as caught:
            untrusted.pointers()
        assert "\n" not in str(caught.value) and "s3cret" not in str(caught.value)
        untrusted.close()
    finally:
        stop_process(proc)


def test_unreachable_redis_fails_fast_and_static():
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    start = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="control store redis://127.0.0.1:"):
        store.last_change_id()
    sub = store.subscribe()  # no Redis is no reason to fail: replicas keep serving
    assert sub.wait(0.3) is False
    assert time.monotonic() - start < 5
    sub.close()
    store.close()


def wait_true(sub, within: float) -> float:
    """Seconds until `sub.wait` says True; fails after `within`."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        if sub.wait(0.2):
            return time.monotonic() - start
    pytest.fail(f"no notification within {within}s")


def test_subscriber_reconnects_after_redis_restart(tmp_path):
    url, proc = start_redis(dir=tmp_path, appendonly=True)
    port = urlsplit(url).port
    store = identified(RedisStore(url))
    sub = store.subscribe(check_interval_s=0.3)
    try:
        assert sub.wait(5) is True
        activate(store, "policy", 1)
        assert sub.wait(5) is True

        stop_process(proc, signal.SIGKILL)
        with pytest.raises(StoreUnavailableError):
            store.pointers()
        assert sub.wait(1) is False  # down: nothing to report, and no exception either
        url, proc = start_redis(port=port, dir=tmp_path, appendonly=True)
        assert wait_true(sub, 10) < 5  # resubscribed: the caller must re-read the pointers
        assert store.pointers() == [Pointer("policy", "default", 1, 1)]
        assert sub.wait(0.3) is False

        activate(store, "policy", 2, prev=1)
        assert sub.wait(5) is True
    finally:
        sub.close()
        store.close()
        stop_process(proc)


def test_subscriber_recovers_when_its_connection_is_killed(redis_url):
    store = identified(RedisStore(redis_url, f"t{uuid.uuid4().hex[:8]}"))
    sub = store.subscribe()
    try:
        assert sub.wait(5) is True
        assert store._redis.client_kill_filter(_type="pubsub") >= 1
        assert wait_true(sub, 5) < 2  # the reconnect itself is the hint
        activate(store, "policy", 1)
        assert sub.wait(5) is True
    finally:
        sub.close()
        store.close()


def test_half_open_subscription_is_detected():
    """A stopped server keeps the TCP connection open but answers nothing: only a PING
    whose answer is awaited tells. After it resumes, the subscriber must have reconnected
    (True without any flip), not carried on with the old connection."""
    url, proc = start_redis()
    store = identified(RedisStore(url))
    sub = store.subscribe(check_interval_s=0.2)
    try:
        assert sub.wait(5) is True
        assert sub.wait(1.0) is False  # five PINGs answered: a healthy link is kept
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            assert sub.wait(1.0) is False
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        assert wait_true(sub, 10) < 5
        activate(store, "policy", 1)
        assert sub.wait(5) is True
    finally:
        sub.close()
        store.close()
        stop_process(proc)


@pytest.mark.parametrize(
    "policy, appendonly, refused, warned",
    [
        ("allkeys-lru", True, True, False),
        ("volatile-lru", True, False, False),  # evicts keys with a TTL only: the store sets none
        ("noeviction", False, False, True),
    ],
)
def test_a_redis_that_could_lose_versions_is_named(tmp_path, policy, appendonly, refused, warned):
    url, proc = start_redis(dir=tmp_path, appendonly=appendonly)
    try:
        redis.Redis.from_url(url).config_set("maxmemory-policy", policy)
        store = RedisStore(url)
        refusals, warnings = store.durability_problems()
        store.close()
    finally:
        stop_process(proc)
    assert [policy in r and "noeviction" in r for r in refusals] == ([True] if refused else [])
    assert ["appendonly" in w for w in warnings] == ([True] if warned else [])


def test_serve_refuses_an_evicting_redis_before_writing_to_it(tmp_path):
    """`gatewayd serve` stops with one line naming the setting; nothing is bootstrapped."""
    from support.gateway import Gateway

    url, proc = start_redis()
    try:
        redis.Redis.from_url(url).config_set("maxmemory-policy", "allkeys-lru")
        gw = Gateway(tmp_path, free_port(), free_port(), redis_url=url)
        done = gw.cli("serve", check=False)
        store = RedisStore(url)
        versions = store.versions("policy")
        store.close()
    finally:
        stop_process(proc)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: control store {url}: maxmemory-policy is allkeys-lru, so Redis may evict "
        "versions and change records; set it to noeviction (or a volatile-* policy)"
    ]
    assert versions == []
