"""Small ASGI helpers: the request path uses the raw protocol, no framework."""

from __future__ import annotations

import asyncio
import sys
from asyncio import CancelledError, current_task
from collections.abc import Awaitable, Callable

if sys.version_info < (3, 12):
    # On 3.11 asyncio.current_task is a Python function around this dict lookup (2k
    # instructions a request under callgrind); from 3.12 it is the C one, taking the loop.
    from asyncio.tasks import _current_tasks  # type: ignore[attr-defined]

    task_on = _current_tasks.get
else:
    task_on = current_task

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

JSON = b"application/json"


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


class BodyTimeout(Exception):
    """The client stalled while sending its body (answered 408)."""


class BodyDeadlines:
    """The body reads in progress, and the sweep that ends the stalled ones.

    One sweep checks them all a few times a second (GatewayApp runs it) instead of arming
    a timer per read, and it keeps the clock: a read only registers and counts its chunks
    (dict operations). A read is stalled when no chunk came for ``idle_s``, or the whole
    body took more than ``total_s``; both are measured from the sweep that first saw the
    read, so a deadline may run up to one sweep interval late.
    """

    EXPIRED = -1

    def __init__(self, idle_s: float, total_s: float, loop: asyncio.AbstractEventLoop | None = None):
        self.idle_s = idle_s
        self.total_s = total_s
        # The loop requests run on, when known: a read finds its task without asking for
        # the running loop, which on Python 3.11 is a getpid system call each time.
        self.loop = loop
        self.reads: dict[asyncio.Task, int] = {}  # task -> chunks received, or EXPIRED
        self._seen: dict[asyncio.Task, tuple[float, int, float]] = {}  # first seen, chunks, last change

    def sweep(self, now: float) -> None:
        reads, seen = self.reads, self._seen
        for task in [task for task in seen if task not in reads]:
            del seen[task]
        for task, chunks in reads.items():
            if chunks == self.EXPIRED:
                continue
            first, counted, changed = seen.get(task) or (now, chunks, now)
            if chunks != counted:
                changed = now
            seen[task] = (first, chunks, changed)
            if now - changed > self.idle_s or now - first > self.total_s:
                reads[task] = self.EXPIRED
                task.cancel()  # delivered at the read's pending receive()


# Set by the app at startup from [server]; the defaults serve the bench and tests in-process.
body_deadlines = BodyDeadlines(10.0, 60.0)


def request_task() -> asyncio.Task:
    """The running request's task. The body-read sweep and the client watch end a request
    by cancelling it: requests run in asyncio tasks (granian's default task
    implementation, which serve keeps)."""
    task = task_on(body_deadlines.loop) or current_task()  # the latter if run on another loop
    assert task is not None
    return task


async def read_body(receive: Receive, limit: int, declared: int | None) -> bytes:
    """Reads the whole request body, refusing early when it passes `limit` bytes, and
    raising BodyTimeout when the client stalls (see BodyDeadlines).

    A body with a Content-Length (`declared`) is whole once that many bytes are in: the
    server frames it by that length, and it strips the header from a chunked request. The
    server's empty end-of-body message is then left unread: fetching it costs a round trip
    to the server's thread, which a cache hit needs for nothing (ClientWatch takes it)."""
    if declared is not None and declared > limit:
        raise BodyTooLarge
    reads = body_deadlines.reads
    task = request_task()
    reads[task] = 0
    try:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        body = message.get("body", b"")
        size = len(body)
        if not message.get("more_body") or size == declared:
            if size > limit:
                raise BodyTooLarge
            return body
        parts = [body]
        while message.get("more_body") and size != declared:
            reads[task] += 1  # progress, for the sweep
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            parts.append(chunk)
        return b"".join(parts)
    except CancelledError:
        if reads[task] == BodyDeadlines.EXPIRED:
            task.uncancel()
            raise BodyTimeout from None
        raise
    finally:
        del reads[task]


class ClientWatch:
    """Learns, without waiting, whether the client hung up while its request is served, and
    stops the request's upstream work when it does.

    granian answers a pending receive() with http.disconnect once the connection closes,
    and it closes it as soon as the client half-closes (hyper's half-close support is off
    and granian 2.8 has no setting for it), while a send() to a closed connection
    succeeds silently: without this watch, an answer nobody received is recorded as given,
    and a provider goes on generating (and billing) an answer nobody will read.
    When read_body stopped at the Content-Length, what is left of the body comes first
    (granian's ASGI sends one empty end-of-body message): the watch asks again after each
    body message, until a receive() waits. A `receive` with a `disconnected()` future of
    its own (the RSGI adapter's) is watched through that, and its body left alone.

    While `armed` (from the start until the request's record is being written), a hang-up
    cancels `task`, the request's: the cancellation reaches whatever upstream wait the
    request is in, which closes the provider's connection (as nginx does by default, and
    Envoy always). `stopped()` then tells the request's own cancellation apart from any
    other. `via` is what the record names as the upstream called (see
    gatewayd.server.forwarding.Via)."""

    __slots__ = ("_receive", "_next", "_closed", "_task", "armed", "fired", "via")

    def __init__(self, receive: Receive, task: asyncio.Task):
        self._receive = receive
        self._closed = False
        self._task = task
        self.armed = True
        self.fired = False  # the hang-up cancelled the task
        self.via: tuple = (0, None, None)
        disconnected = getattr(receive, "disconnected", None)
        if disconnected is not None:
            self._next = asyncio.ensure_future(disconnected())
            self._next.add_done_callback(self._arrived)
        else:
            self._ask()

    def _ask(self) -> None:
        self._next = asyncio.ensure_future(self._receive())
        self._next.add_done_callback(self._arrived)

    def _arrived(self, message: asyncio.Future) -> None:
        if self._closed or message.cancelled() or message.exception() is not None:
            return
        said = message.result()  # None from a `disconnected()` future: its completing says it
        if said is not None and said["type"] == "http.request":
            return self._ask()
        if self.armed:
            self.fired = True
            self._task.cancel("the client closed the connection")

    def gone(self) -> bool:
        message = self._next
        if not message.done() or message.cancelled() or message.exception() is not None:
            return False
        said = message.result()
        return said is None or said["type"] == "http.disconnect"

    def stopped(self) -> bool:
        """Whether a CancelledError being handled is this watch's doing alone: if so, the
        task's cancellation is taken back, and the request goes on to record what
        happened. Another cancellation (the server shutting down) stays pending."""
        if not self.fired:
            return False
        self.fired = False
        return self._task.uncancel() == 0

    def close(self) -> None:
        self._closed = True  # a body message arriving after this asks for nothing more
        self.armed = False
        # granian's futures are invisible to the cycle collector: the callback (bound to
        # this watch, which holds the future) is a cycle only taking it off breaks.
        self._next.remove_done_callback(self._arrived)
        self._next.cancel()


def transfer_coding_problem(values: list[bytes]) -> tuple[int, str] | None:
    """(status, message) when the Transfer-Encoding header `values` are anything but one
    `chunked`: RFC 9112 forbids chunked twice (400) and the gateway decodes no other coding
    (501)."""
    codings = [c.strip().lower() for value in values for c in value.split(b",")]
    if codings == [b"chunked"]:
        return None
    if codings.count(b"chunked") > 1:
        return 400, "Transfer-Encoding applies chunked more than once (RFC 9112, section 7)"
    return (
        501,
        f"Transfer-Encoding {b', '.join(codings).decode('latin-1')} is not supported; send chunked or Content-Length",
    )


async def respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def header(scope: dict, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None
