"""The fsync policies as the serving loop drives them, on a real engine and disk."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from gatewayd import _core
from gatewayd.audit.sync import AuditSync
from support.audit import CHAIN


def engine_with(tmp_path, policy: str, interval_ms: int = 0):
    engine = _core.Engine(16, 1 << 20, str(tmp_path), CHAIN, 1 << 20)
    engine.set_audit_sync(policy, interval_ms)
    return engine


async def request(engine, sync: AuditSync, n: int) -> tuple[int, int]:
    """What a request does: append its record, then wait until it is durable."""
    seq = engine.event(f'{{"kind":"request","n":{n}}}'.encode())
    await sync.durable(seq)
    return seq, engine.audit_sync_state()[3]


def test_group_commit_makes_each_record_durable_with_shared_fsyncs(tmp_path):
    engine = engine_with(tmp_path, "group")
    sync = AuditSync(engine)

    async def run():
        return await asyncio.gather(*(request(engine, sync, n) for n in range(200)))

    results = asyncio.run(run())
    assert all(synced >= seq for seq, synced in results)
    fsyncs = {synced for _, synced in results}
    assert len(fsyncs) < 20, f"200 requests needed {len(fsyncs)} fsyncs"


@pytest.mark.timeout(20)
def test_group_commit_keeps_serving_staggered_requests_under_uvloop(tmp_path):
    """Requests arriving while an fsync is in flight wait for the next one, on the event
    loop the gateway runs (uvloop); none may spin on a flight that has already landed."""
    engine = engine_with(tmp_path, "group")
    sync = AuditSync(engine)

    async def client(n: int) -> list[tuple[int, int]]:
        done = []
        for i in range(50):
            done.append(await request(engine, sync, n * 100 + i))
            await asyncio.sleep(0.0005 * (n % 3))
        return done

    async def run():
        return await asyncio.gather(*(client(n) for n in range(4)))

    results = [r for rounds in uvloop.run(run()) for r in rounds]
    assert len(results) == 200 and all(synced >= seq for seq, synced in results)


def test_without_group_commit_requests_do_not_wait(tmp_path):
    for policy in ("never", "interval"):
        engine = engine_with(tmp_path / policy, policy, 60_000)
        seq, synced = asyncio.run(request(engine, AuditSync(engine), 0))
        assert synced < seq, policy


def test_the_interval_timer_syncs_a_quiet_chain(tmp_path):
    engine = engine_with(tmp_path, "interval", 50)
    sync = AuditSync(engine)

    async def run():
        sync.start()
        seq = engine.event(b'{"kind":"request"}')
        for _ in range(100):
            await asyncio.sleep(0.02)
            if engine.audit_sync_state()[3] >= seq:
                break
        await sync.stop()
        return seq

    seq = asyncio.run(run())
    assert engine.audit_sync_state()[3] >= seq


def test_always_syncs_inside_the_append(tmp_path):
    engine = engine_with(tmp_path, "always")
    seq = engine.event(b'{"kind":"request"}')
    assert engine.audit_sync_state() == ("always", 0, seq, seq)


def test_a_request_waits_by_its_own_policy_not_the_engines_current_one(tmp_path):
    """R6: a request admitted under `group` or `always` is answered only once its record is
    on disk, even if a flip has since set the engine to `never`."""
    for policy in ("group", "always"):
        engine = engine_with(tmp_path / policy, "never")
        sync = AuditSync(engine)

        async def run(engine, sync, policy):
            seq = engine.event(b'{"kind":"request"}')
            await sync.durable(seq, policy)
            return seq, engine.audit_sync_state()[3]

        seq, synced = asyncio.run(run(engine, sync, policy))
        assert synced >= seq, policy


def test_answers_start_only_once_their_records_are_on_disk(tmp_path, mock_port, fragile_port, monkeypatch):
    """Under `group` the pipeline answers a forwarded request, and then the cache hit of the
    same request, only after its record is synced: when each answer's first message goes
    out, everything appended is on disk (the app runs in-process, so the engine can be
    asked at that moment; the provider is the real mock over HTTP)."""
    from gatewayd import config
    from gatewayd.cli.serve import bootstrap
    from gatewayd.server.app import create_app
    from support.gateway import KEYS, Gateway

    gw = Gateway(tmp_path, mock_port, fragile_port)
    (tmp_path / "runtime.yaml").write_text(
        "cache: {enabled: true, ttl_s: 300, mode: deterministic}\naudit: {fsync: group}\n"
    )
    monkeypatch.setenv("GATEWAYD_CONFIG", str(gw.config))
    bootstrap(config.load(str(gw.config)))
    app = create_app()
    body = b'{"model":"mock-gpt","temperature":0,"messages":[{"role":"user","content":"durable?"}]}'
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "headers": [(b"authorization", f"Bearer {KEYS['acme']}".encode()), (b"content-type", b"application/json")],
    }

    async def serve_once() -> tuple[int, str, int, int]:
        seen: dict = {}
        pending = asyncio.get_running_loop().create_future()  # the client never hangs up

        async def receive() -> dict:
            if "body" not in seen:
                seen["body"] = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await pending

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                _, _, appended, synced = app.engine.audit_sync_state()
                headers = dict(message["headers"])
                seen.update(status=message["status"], cache=headers[b"x-gatewayd-cache"].decode())
                seen.update(appended=appended, synced=synced)

        await app(scope, receive, send)
        return seen["status"], seen["cache"], seen["appended"], seen["synced"]

    async def run() -> list[tuple[int, str, int, int]]:
        await app.startup()
        try:
            return [await serve_once(), await serve_once()]
        finally:
            await app.shutdown()

    forwarded, hit = uvloop.run(run())
    assert forwarded[:2] == (200, "miss") and hit[:2] == (200, "hit")
    for _, cache, appended, synced in (forwarded, hit):
        assert appended >= 1 and synced >= appended, (cache, appended, synced)
