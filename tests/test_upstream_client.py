"""UpstreamClient against a real mock provider process: bodies, streaming, and each failure
kind (the wire-level behaviour, against hand-written providers, is in
test_upstream_connections.py)."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest

from gatewayd.upstream import UpstreamClient, UpstreamError
from support.mock import start_mock
from support.procs import free_port, stop_process
from support.providers import raw_provider

AUTH = [("authorization", "Bearer sk-test"), ("content-type", "application/json")]
# Whole responses (one deadline, read before send returns) and streams (one timeout per
# wait, read as they come) take different paths: what both must do is tested on both.
BOTH_READS = pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])


def chat_body(stream: bool = False) -> bytes:
    return json.dumps(
        {"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": "hello upstream"}]}
    ).encode()


def run(coro_fn):
    """Run one test body on a fresh loop with a started client, closing it afterwards."""

    async def main():
        client = UpstreamClient(max_connections=8, connect_timeout=2.0)
        await client.start()
        try:
            return await coro_fn(client)
        finally:
            await client.close()

    return asyncio.run(main())


@BOTH_READS
def test_status_headers_and_body(mock_url, stream):
    async def body(client):
        url = f"{mock_url}/v1/chat/completions"
        resp = await client.send("POST", url, AUTH, chat_body(), timeout=5, stream=stream)
        try:
            return resp.status, resp.headers, await resp.read()
        finally:
            await resp.aclose()

    status, headers, payload = run(body)
    assert status == 200
    names = [name for name, _ in headers]
    assert names == [n.lower() for n in names]
    assert dict(headers)[b"content-type"] == b"application/json"
    assert dict(headers)[b"x-request-id"].startswith(b"req_")
    assert json.loads(payload)["choices"][0]["message"]["content"] == "echo: hello upstream"


@BOTH_READS
def test_error_status_is_a_response_not_an_exception(mock_url, stream):
    async def body(client):
        headers = [*AUTH, ("x-mock-status", "503")]
        url = f"{mock_url}/v1/chat/completions"
        resp = await client.send("POST", url, headers, chat_body(), timeout=5, stream=stream)
        try:
            return resp.status, json.loads(await resp.read())
        finally:
            await resp.aclose()

    status, payload = run(body)
    assert status == 503 and payload["error"]["type"] == "server_error"


@BOTH_READS
def test_provider_gets_the_callers_headers_and_real_framing(mock_url, stream):
    async def body(client):
        await _send_and_close(client, "DELETE", f"{mock_url}/_mock/requests", [], b"")
        headers = [*AUTH, ("content-length", "1"), ("host", "elsewhere.example"), ("x-trace", "t-7")]
        await _send_and_close(client, "POST", f"{mock_url}/v1/chat/completions", headers, chat_body(), stream)
        journal = await client.send("GET", f"{mock_url}/_mock/requests", [], b"", timeout=5)
        try:
            return json.loads(await journal.read())[0]["headers"]
        finally:
            await journal.aclose()

    headers = run(body)
    assert headers["host"] == mock_url.removeprefix("http://")
    assert headers["content-length"] == str(len(chat_body()))
    assert headers["x-trace"] == "t-7" and headers["content-type"] == "application/json"
    assert headers["authorization"] is True
    # No library extras: a proxy must not invent encodings, cookies or content types.
    assert set(headers) <= {"host", "content-length", "authorization", "content-type", "x-trace", "user-agent"}


def test_a_header_with_a_line_break_is_refused_every_time(mock_url):
    """Header lines are encoded once and reused; a refused one is never kept as if fine."""

    async def body(client):
        url = f"{mock_url}/v1/chat/completions"
        refusals = []
        for _ in range(2):
            with pytest.raises(UpstreamError) as refused:
                await client.send("POST", url, [*AUTH, ("x-note", "a\r\nx-injected: 1")], chat_body(), timeout=5)
            refusals.append((refused.value.kind, str(refused.value)))
        await _send_and_close(client, "POST", url, AUTH, chat_body())  # the others still go out
        return refusals

    assert run(body) == [("protocol", "protocol: header 'x-note' has a line break in it")] * 2


async def _send_and_close(client, method, url, headers, body, stream=False):
    resp = await client.send(method, url, headers, body, timeout=5, stream=stream)
    await resp.aclose()
    assert resp.status < 300, resp.status


def test_stream_chunks_arrive_as_sent(mock_url):
    """With a pause between events, each SSE event is its own chunk, in order, before the end."""
    events = []

    async def body(client):
        headers = [*AUTH, ("x-mock-chunk-delay-ms", "40"), ("x-mock-chunks", "4")]
        resp = await client.send(
            "POST", f"{mock_url}/v1/chat/completions", headers, chat_body(True), timeout=5, stream=True
        )
        events.append(("headers", resp.status))
        try:
            async for chunk in resp.chunks():
                events.append(("chunk", chunk))
        finally:
            await resp.aclose()
        events.append(("end", None))

    run(body)
    assert events[0] == ("headers", 200)
    chunks = [c for kind, c in events if kind == "chunk"]
    # role chunk, 4 content chunks, finish chunk, [DONE]: each arrived on its own.
    assert len(chunks) == 7
    assert all(c.startswith(b"data: ") and c.endswith(b"\n\n") for c in chunks)
    assert chunks[-1] == b"data: [DONE]\n\n"
    assert events[-1] == ("end", None)


def test_first_chunk_is_handed_over_before_the_stream_ends(mock_url):
    """The consumer sees chunk 1 while the upstream is still producing: it can act on it."""
    order = []

    async def body(client):
        headers = [*AUTH, ("x-mock-chunk-delay-ms", "150"), ("x-mock-chunks", "3")]
        resp = await client.send(
            "POST", f"{mock_url}/v1/chat/completions", headers, chat_body(True), timeout=5, stream=True
        )
        chunks = resp.chunks()
        first = await anext(chunks)
        order.append("first")
        # Another request completes entirely while the stream is paused between events.
        side = await client.send("POST", f"{mock_url}/v1/chat/completions", AUTH, chat_body(), timeout=5)
        await side.read()
        await side.aclose()
        order.append("side request done")
        rest = [c async for c in chunks]
        order.append("last")
        await resp.aclose()
        return first, rest

    first, rest = run(body)
    assert order == ["first", "side request done", "last"]
    assert b'"role":"assistant"' in first and rest[-1] == b"data: [DONE]\n\n"


@BOTH_READS
def test_connection_refused_is_unreachable(stream):
    port = free_port()  # nothing listens there

    async def body(client):
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        await client.send("POST", url, AUTH, chat_body(), timeout=5, stream=stream)

    with pytest.raises(UpstreamError) as info:
        run(body)
    assert info.value.kind == "unreachable"


@BOTH_READS
def test_no_headers_within_timeout_is_timeout(mock_url, stream):
    async def body(client):
        headers = [*AUTH, ("x-mock-latency-ms", "3000")]
        url = f"{mock_url}/v1/chat/completions"
        await client.send("POST", url, headers, chat_body(), timeout=0.3, stream=stream)

    with pytest.raises(UpstreamError) as info:
        run(body)
    assert info.value.kind == "timeout"


def test_a_whole_response_has_one_deadline_and_a_stream_one_per_wait(mock_url):
    """Events 300 ms apart, 1.2 s in all, under a 1 s timeout: too slow as one response,
    fine as a stream (no wait is longer than 300 ms)."""
    headers = [*AUTH, ("x-mock-chunk-delay-ms", "300"), ("x-mock-chunks", "4")]
    url = f"{mock_url}/v1/chat/completions"
    outcome = {}

    async def body(client):
        started = time.monotonic()
        try:
            await client.send("POST", url, headers, chat_body(True), timeout=1)
        except UpstreamError as exc:
            outcome["whole"] = (exc.kind, time.monotonic() - started)
        resp = await client.send("POST", url, headers, chat_body(True), timeout=1, stream=True)
        try:
            outcome["stream"] = len([chunk async for chunk in resp.chunks()])
        finally:
            await resp.aclose()

    run(body)
    kind, elapsed = outcome["whole"]
    assert kind == "timeout" and 0.9 < elapsed < 1.2
    assert outcome["stream"] == 7  # role, 4 content events, finish, [DONE]


@BOTH_READS
def test_timed_out_requests_give_back_their_connection_slots(mock_url, stream):
    async def body(client):  # the client allows 8 requests in flight
        slow = [*AUTH, ("x-mock-latency-ms", "5000")]
        url = f"{mock_url}/v1/chat/completions"
        results = await asyncio.gather(
            *(client.send("POST", url, slow, chat_body(), timeout=0.2, stream=stream) for _ in range(16)),
            return_exceptions=True,
        )
        assert all(isinstance(r, UpstreamError) and r.kind == "timeout" for r in results)
        resp = await client.send("POST", url, AUTH, chat_body(), timeout=2, stream=stream)
        await resp.aclose()
        return resp.status

    assert run(body) == 200


@BOTH_READS
def test_cancelling_a_pending_request_closes_its_connection(stream):
    """A caller that gives up (client gone, deadline hit) must stop the provider's work too."""

    async def main():
        accepted, closed = asyncio.Event(), asyncio.Event()

        async def never_answer(reader, writer):
            accepted.set()
            while await reader.read(65536):  # swallow the request, answer nothing
                pass
            closed.set()  # EOF: the client dropped the connection
            writer.close()

        async with raw_provider(never_answer) as (url, client):
            task = asyncio.create_task(client.send("POST", url, AUTH, b"{}", timeout=30, stream=stream))
            await asyncio.wait_for(accepted.wait(), 5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.wait_for(closed.wait(), 5)

    asyncio.run(main())


@BOTH_READS
def test_stalled_body_is_timeout(mock_url, stream):
    async def body(client):
        headers = [*AUTH, ("x-mock-chunk-delay-ms", "3000")]
        url = f"{mock_url}/v1/chat/completions"
        resp = await client.send("POST", url, headers, chat_body(True), timeout=0.3, stream=stream)
        try:
            async for _ in resp.chunks():
                pass
        finally:
            await resp.aclose()

    with pytest.raises(UpstreamError) as info:
        run(body)
    assert info.value.kind == "timeout"


def test_upstream_killed_mid_stream_is_protocol_error():
    url, proc = start_mock("--chunk-delay-ms", "200")
    received = []

    async def body(client):
        resp = await client.send("POST", f"{url}/v1/chat/completions", AUTH, chat_body(True), timeout=5, stream=True)
        try:
            async for chunk in resp.chunks():
                received.append(chunk)
                if len(received) == 2:
                    stop_process(proc, signal.SIGKILL)
        finally:
            await resp.aclose()

    try:
        with pytest.raises(UpstreamError) as info:
            run(body)
    finally:
        stop_process(proc)
    assert info.value.kind == "protocol"
    assert len(received) == 2


def test_send_before_start_is_a_programming_error():
    async def main():
        await UpstreamClient().send("GET", "http://127.0.0.1:1/", [], b"", timeout=1)

    with pytest.raises(RuntimeError):
        asyncio.run(main())


@BOTH_READS
def test_body_cut_short_is_protocol_error(stream):
    """The provider promises 100 bytes, sends 5 and hangs up."""

    async def main():
        async def truncate(reader, writer):
            await reader.read(65536)
            writer.write(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"id"')
            await writer.drain()
            writer.close()

        async with raw_provider(truncate) as (url, client):
            resp = await client.send("POST", url, AUTH, b"{}", timeout=5, stream=stream)
            try:
                await resp.read()
            finally:
                await resp.aclose()

    with pytest.raises(UpstreamError) as info:
        asyncio.run(main())
    assert info.value.kind == "protocol"
