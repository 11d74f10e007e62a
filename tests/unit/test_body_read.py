"""read_body against a receive() that hands out messages as granian does: the body, then
an empty end-of-body message that arrives only when the server's thread gets round to it."""

from __future__ import annotations

import asyncio

import pytest

from gatewayd.server.asgi import read_body


class Receive:
    """Hands out `messages` in order, then futures that never complete; counts the calls."""

    def __init__(self, *messages: dict):
        self.messages = list(messages)
        self.calls = 0

    async def __call__(self) -> dict:
        self.calls += 1
        if self.messages:
            return self.messages.pop(0)
        return await asyncio.get_running_loop().create_future()


def part(body: bytes, more: bool) -> dict:
    return {"type": "http.request", "body": body, "more_body": more}


def read(receive: Receive, declared: int | None, limit: int = 1 << 20) -> bytes:
    async def run() -> bytes:
        return await asyncio.wait_for(read_body(receive, limit, declared), 2)

    return asyncio.run(run())


def test_a_body_is_whole_at_its_content_length_without_the_end_message():
    receive = Receive(part(b"hello ", True), part(b"world", True))  # the end never comes
    assert read(receive, declared=11) == b"hello world"
    assert receive.calls == 2


def test_one_message_holding_the_content_length_is_the_body():
    receive = Receive(part(b"hello", True))
    assert read(receive, declared=5) == b"hello"
    assert receive.calls == 1


def test_without_a_content_length_the_body_ends_with_the_end_message():
    receive = Receive(part(b"hello ", True), part(b"world", True), part(b"", False))
    assert read(receive, declared=None) == b"hello world"
    assert receive.calls == 3


def test_without_a_content_length_and_without_the_end_message_the_read_waits():
    with pytest.raises(TimeoutError):
        read(Receive(part(b"hello", True)), declared=None)
