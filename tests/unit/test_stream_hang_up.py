"""A client that hangs up while its stream is relayed (StreamRelay.relay with a
ClientWatch): the provider's stream is closed and the record says 499 with what was
relayed, unless the client had read the stream's last event already (as SDKs hang up on
reading it). A real engine admits the stream and writes its record; the upstream is a
stand-in that hands over chunks as a network would, one wait each. No network."""

from __future__ import annotations

import asyncio
import hashlib

from gatewayd.control.documents import RuntimeConfig
from gatewayd.server.asgi import ClientWatch
from gatewayd.server.usage import Counts, stopped_counts
from support.relay import CHUNKS, STREAMED, relaying


class Upstream:
    """Hands over CHUNKS, each after a wait; the client hangs up (`hang_up`) before chunk
    `at` (len(CHUNKS): after the last, while the stream's end has not come in yet)."""

    def __init__(self, at: int, hang_up) -> None:
        self.at, self.hang_up = at, hang_up
        self.closed = False

    async def chunks(self):
        for i, chunk in enumerate(CHUNKS):
            if i == self.at:
                self.hang_up()
            await asyncio.sleep(0)  # the network
            yield chunk
        if self.at == len(CHUNKS):
            self.hang_up()
            await asyncio.get_running_loop().create_future()  # the end of the body, never coming

    async def aclose(self) -> None:
        self.closed = True


def relay_until_hang_up(at: int):
    """What the client was sent, the record, and the upstream, for a hang-up before chunk `at`."""
    with relaying() as run:
        sent: list[bytes] = []

        async def send(message: dict) -> None:
            sent.append(message.get("body", b""))

        async def go() -> Upstream:
            going = asyncio.get_running_loop().create_future()
            watch = ClientWatch(lambda: going, asyncio.current_task())
            upstream = Upstream(at, lambda: going.set_result({"type": "http.disconnect"}))
            adm = run.admit(RuntimeConfig())
            run.pipeline.clients[adm] = watch
            await run.pipeline.streams.relay(send, adm, upstream, [], 0.0, False, (0, None, None), None, False, watch)
            watch.close()
            await asyncio.sleep(0)  # nothing is left cancelled: the request goes on
            return upstream

        upstream = asyncio.run(go())
        record = run.record()
    return sent[1:], record, upstream


def test_a_hang_up_mid_stream_closes_the_provider_stream_and_records_what_was_relayed():
    bodies, record, upstream = relay_until_hang_up(at=2)
    relayed = b"".join(CHUNKS[:2])
    assert bodies == CHUNKS[:2]
    assert upstream.closed
    assert record["status"] == 499
    assert record["error"].startswith(f"client closed the connection after {len(relayed)} bytes of the stream")
    assert record["response_sha256"] == hashlib.sha256(relayed).hexdigest()
    # No usage came from the provider: what the client took is charged, estimated.
    assert record["error"].endswith("(usage estimated: 2 content events relayed)")
    assert (record["prompt_tokens"], record["completion_tokens"]) == (len(STREAMED) // 4, 2)


def test_a_hang_up_after_the_last_event_is_a_whole_answer():
    bodies, record, _ = relay_until_hang_up(at=len(CHUNKS))
    assert bodies[: len(CHUNKS)] == CHUNKS
    assert record["status"] == 200 and record["error"] is None
    assert record["response_sha256"] == hashlib.sha256(b"".join(CHUNKS)).hexdigest()


def test_a_stopped_request_is_charged_what_the_provider_said_when_it_said_it_all():
    assert stopped_counts(Counts(100, 7, 40), 4000, 5) == (Counts(100, 7, 40), False)


def test_a_stopped_request_is_charged_an_estimate_for_what_the_provider_did_not_say():
    # Anthropic's message_start gave the prompt (and one output token); 9 events went out.
    assert stopped_counts(Counts(100, 1, 40), 4000, 9) == (Counts(100, 9, 40), True)
    # OpenAI's usage comes last: nothing was said, the prompt is taken from the body's size.
    assert stopped_counts(None, 4000, 3) == (Counts(1000, 3, 0), True)
    assert stopped_counts(None, 2, 0) == (Counts(1, 0, 0), True)
