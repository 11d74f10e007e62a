"""The upstream client on the wire, against hand-written providers: connection reuse,
response framings, idle and stale connections, read-ahead, and what it refuses."""

from __future__ import annotations

import asyncio

import pytest

from gatewayd.upstream import UpstreamClient, UpstreamError, pool
from support.providers import http_provider, raw_provider

AUTH = [("authorization", "Bearer sk-test"), ("content-type", "application/json")]


async def _exchange(client, url, stream=False) -> tuple[int, bytes]:
    resp = await client.send("POST", url, AUTH, b"{}", timeout=5, stream=stream)
    try:
        return resp.status, await resp.read()
    finally:
        await resp.aclose()


def test_kept_alive_connection_is_reused_and_framings_are_read():
    """Content-length, chunked, and a body that ends with the connection: all read whole;
    the first two share one connection, the third is not reused after it."""
    connections: list[int] = []
    responses = [
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst",
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nsec\r\n3\r\nond\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nthird, to the end",
        b"HTTP/1.1 201 Created\r\ncontent-length: 6\r\n\r\nfourth",
    ]

    async def main():
        async with raw_provider(http_provider(responses, connections)) as (url, client):
            return [await _exchange(client, url, stream=i % 2 == 1) for i in range(4)]

    assert asyncio.run(main()) == [(200, b"first"), (200, b"second"), (200, b"third, to the end"), (201, b"fourth")]
    assert len(connections) == 2


def test_a_connection_the_provider_closed_while_idle_is_not_reused():
    connections: list[int] = []
    responses = [b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na", b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb"]

    async def answer_once(reader, writer):  # keep-alive announced, then the provider hangs up
        await http_provider([responses.pop(0)], connections)(reader, writer)

    async def main():
        async with raw_provider(answer_once) as (url, client):
            first = await _exchange(client, url)
            await asyncio.sleep(0.1)  # the close reaches the client's loop
            return first, await _exchange(client, url)

    assert asyncio.run(main()) == ((200, b"a"), (200, b"b"))
    assert len(connections) == 2


def test_a_stream_bigger_than_the_read_ahead_arrives_whole_to_a_slow_reader():
    """Reading pauses while the consumer lags (gatewayd.upstream.connection.HIGH_WATER)
    and resumes as it catches up: nothing is lost or reordered."""
    payload = bytes(range(256)) * 8192  # 2 MiB
    response = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(payload), payload)

    async def main():
        async with raw_provider(http_provider([response], [])) as (url, client):
            resp = await client.send("POST", url, AUTH, b"{}", timeout=5, stream=True)
            parts = []
            async for chunk in resp.chunks():
                parts.append(chunk)
                await asyncio.sleep(0.01)
            await resp.aclose()
            return b"".join(parts), len(parts)

    received, count = asyncio.run(main())
    assert received == payload and count > 1


def test_a_header_with_a_line_break_is_refused_before_anything_is_sent():
    connections: list[int] = []

    async def main():
        async with raw_provider(http_provider([], connections)) as (url, client):
            await client.send("POST", url, [("x-note", "a\r\nx-injected: 1")], b"{}", timeout=5)

    with pytest.raises(UpstreamError) as info:
        asyncio.run(main())
    assert info.value.kind == "protocol" and connections == []


def test_connections_idle_too_long_are_closed_not_reused(monkeypatch):
    """A burst opens three connections; once they have been idle past IDLE_S the next
    request closes them all and dials afresh."""
    monkeypatch.setattr(pool, "IDLE_S", 0.2)
    connections: list[int] = []
    hung_up: list[int] = []
    answer = http_provider([b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"] * 8, connections)

    async def counting(reader, writer):
        await answer(reader, writer)
        hung_up.append(1)

    async def main():
        async with raw_provider(counting) as (url, client):
            statuses = await asyncio.gather(*(_exchange(client, url) for _ in range(3)))
            await asyncio.sleep(0.3)
            statuses.append(await _exchange(client, url))
            await asyncio.sleep(0.1)  # the closes reach the provider
            return [status for status, _ in statuses], len(hung_up)

    statuses, closed = asyncio.run(main())
    assert statuses == [200] * 4
    assert len(connections) == 4 and closed == 3


def test_oversized_response_headers_are_refused():
    response = b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-filler-%d: %s\r\n" % (i, b"a" * 1000) for i in range(100))

    async def main():
        async with raw_provider(http_provider([response + b"content-length: 0\r\n\r\n"], [])) as (url, client):
            await _exchange(client, url)

    with pytest.raises(UpstreamError) as info:
        asyncio.run(main())
    assert info.value.kind == "protocol" and "headers over" in str(info.value)


@pytest.mark.parametrize("idle_s, outcome", [(0.15, "answered"), (0.0, "protocol")], ids=["stale", "fresh"])
def test_a_kept_alive_connection_closed_as_the_request_went_out(monkeypatch, idle_s, outcome):
    """The provider reads a connection's second request and hangs up without a byte, as
    when its idle timeout fires just then. After an idle spell (STALE_AFTER_S) the request
    goes once more on a new connection; on a connection in use a moment ago it does not,
    since the provider may have been working on it."""
    monkeypatch.setattr(pool, "STALE_AFTER_S", 0.1)
    connections: list[int] = []

    async def hang_up_on_second(reader, writer):
        connections.append(len(connections))
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")  # the second request: no answer
        writer.close()

    async def main():
        async with raw_provider(hang_up_on_second) as (url, client):
            await _exchange(client, url)
            await asyncio.sleep(idle_s)
            try:
                await _exchange(client, url)
                return "answered"
            except UpstreamError as exc:
                return exc.kind

    assert asyncio.run(main()) == outcome
    assert len(connections) == (2 if outcome == "answered" else 1)


@pytest.mark.parametrize("url", ["ftp://provider.example/v1", "http://provider.example:port/v1", "http:///v1"])
def test_a_url_the_client_cannot_speak_to_is_unreachable(url):
    async def main():
        async with raw_provider(http_provider([], [])) as (_, client):
            await client.send("POST", url, AUTH, b"{}", timeout=5)

    with pytest.raises(UpstreamError) as info:
        asyncio.run(main())
    assert info.value.kind == "unreachable" and url in str(info.value)


def test_a_stalled_provider_holds_up_its_own_requests_only():
    """Slots are per origin: with a limit of 1 for the silent provider, its second request
    waits for a slot and times out, while the other provider answers at once."""

    async def silent(reader, writer):
        await reader.read(65536)
        await asyncio.sleep(5)
        writer.close()

    async def main():
        quiet = await asyncio.start_server(silent, "127.0.0.1", 0)
        quiet_url = f"http://127.0.0.1:{quiet.sockets[0].getsockname()[1]}/"
        async with raw_provider(http_provider([b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"], [])) as (url, _):
            client = UpstreamClient(limits={quiet_url: 1})
            await client.start()
            stuck = asyncio.create_task(client.send("POST", quiet_url, AUTH, b"{}", timeout=3))
            await asyncio.sleep(0.05)
            try:
                await client.send("POST", quiet_url, AUTH, b"{}", timeout=0.2)
            except UpstreamError as exc:
                waited = str(exc)
            other = await _exchange(client, url)
            stuck.cancel()
            await client.close()
        quiet.close()
        return waited, other

    waited, other = asyncio.run(main())
    assert waited.startswith("timeout: no free connection to http://127.0.0.1:")
    assert other == (200, b"ok")
