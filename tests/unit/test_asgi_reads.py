"""read_body and ClientWatch against a receive() that hands out messages as granian does:
the body, then an empty end-of-body message that arrives only when the server's thread
gets round to it, then one that waits until the client goes; and the watch stopping the
request's task when the client goes."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from gatewayd.server.asgi import ClientWatch, read_body


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


class KeptCallbacks:
    """A future as granian's are: it never drops its done callbacks (and the cycle
    collector cannot see into it; here, it is simply switched off)."""

    _asyncio_future_blocking = False

    def __init__(self, result: dict | None = None):
        self.callbacks: list = []
        self._result = result
        self._cancelled = False

    def done(self) -> bool:
        return self._result is not None or self._cancelled

    def cancelled(self) -> bool:
        return self._cancelled

    def exception(self) -> None:
        return None

    def result(self) -> dict | None:
        return self._result

    def add_done_callback(self, callback) -> None:
        self.callbacks.append(callback)

    def remove_done_callback(self, callback) -> int:
        kept = [c for c in self.callbacks if c != callback]
        removed, self.callbacks = len(self.callbacks) - len(kept), kept
        return removed

    def cancel(self) -> bool:
        self._cancelled = True
        return True

    def get_loop(self):
        return asyncio.get_event_loop()

    def __await__(self):
        yield self
        return self._result


def test_a_closed_watch_leaves_no_cycle_behind():
    """Each forwarded request makes a watch: one that stayed alive through its future's
    callback would leak a few KB a request under granian."""
    gc.disable()
    try:
        futures = [KeptCallbacks()]
        ref = weakref.ref(futures[0])
        watch = ClientWatch(futures.pop, task=None)  # the one receive() hands the future over
        watch.close()
        del watch
        assert ref() is None, "the watch and its future keep each other alive"
    finally:
        gc.enable()


def test_the_watch_passes_over_the_end_of_body_message_and_sees_the_client_go():
    async def run() -> list[bool]:
        going = asyncio.get_running_loop().create_future()
        left = [part(b"", False)]  # the end-of-body message read_body did not wait for

        async def receive() -> dict:
            return left.pop() if left else await going

        watch = ClientWatch(receive, asyncio.current_task())
        watch.armed = False  # only watching here: the hang-up stops nothing
        await asyncio.sleep(0.01)
        seen = [watch.gone()]
        going.set_result({"type": "http.disconnect"})
        await asyncio.sleep(0.01)
        seen.append(watch.gone())
        watch.close()
        return seen

    assert asyncio.run(run()) == [False, True]


def hang_up_while_waiting(armed: bool, also_cancelled: bool = False):
    """A request task waits (as on a provider) while its client goes: what it sees."""

    async def run():
        going = asyncio.get_running_loop().create_future()
        seen = {}

        async def request():
            watch = ClientWatch(lambda: going, asyncio.current_task())
            watch.armed = armed
            try:
                await asyncio.sleep(5)  # the upstream wait
                seen["outcome"] = "answered"
            except asyncio.CancelledError:
                seen["stopped"] = watch.stopped()
                seen["outcome"] = "stopped"
                if not seen["stopped"]:
                    raise
            finally:
                seen["gone"] = watch.gone()
                watch.close()
            await asyncio.sleep(0)  # the request goes on: nothing is left cancelled
            seen["after"] = "went on"

        task = asyncio.ensure_future(request())
        await asyncio.sleep(0.01)
        going.set_result({"type": "http.disconnect"})
        if also_cancelled:
            task.cancel()  # the server shutting down, in the same turn as the hang-up
        done, _ = await asyncio.wait({task}, timeout=0.2)
        if not done:
            waiting = {**seen, "task": "still waiting"}
            task.cancel()
            return waiting
        if task.cancelled():
            seen["task"] = "cancelled"
        return seen

    return asyncio.run(run())


def test_an_armed_watch_stops_the_request_when_the_client_goes():
    seen = hang_up_while_waiting(armed=True)
    assert seen == {"stopped": True, "outcome": "stopped", "gone": True, "after": "went on"}


def test_a_disarmed_watch_only_notes_the_client_going():
    """Once the request's record is being written, a hang-up stops nothing."""
    seen = hang_up_while_waiting(armed=False)
    assert seen["task"] == "still waiting" and "outcome" not in seen


def test_another_cancellation_is_not_taken_for_the_hang_up():
    seen = hang_up_while_waiting(armed=True, also_cancelled=True)
    assert seen["task"] == "cancelled" and seen["stopped"] is False
