"""A stream relayed while the replica swaps snapshots (StreamRelay.relay with
InService, docs/ROLLBACK.md R6): the swaps happen between chunks, exactly where the
test puts them. A real engine admits the stream and writes its record; the upstream is a
stand-in that hands over chunks on cue. No network."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from gatewayd import _core
from gatewayd.control.documents import RuntimeConfig
from gatewayd.control.snapshot import InService
from support.relay import CHUNKS, V1, relaying

V2 = _core.Versions(1, 2, 1)


class Upstream:
    """Yields CHUNKS; `before[i]` runs before chunk i is handed over."""

    def __init__(self, before: dict[int, Callable[[], None]]) -> None:
        self.before = before
        self.closed = False
        self.handed = 0

    async def chunks(self):
        for i, chunk in enumerate(CHUNKS):
            if i in self.before:
                self.before[i]()
            self.handed += 1
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


def relay(mode: str, swaps: dict[int, list[_core.Versions]], start: tuple = (V1,), anthropic=False):
    """Relays CHUNKS to a stream admitted under V1 with `inflight_on_revert: mode`; before
    chunk i the replica swaps to serving `swaps[i]` (as change 10 + i). Returns what the
    client got (bodies), the record's fields and the upstream."""
    in_service = InService()
    in_service.swap(start, 9)
    with relaying(in_service) as run:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        def swap(i: int, sets: list[_core.Versions]) -> Callable[[], None]:
            return lambda: in_service.swap(sets, 10 + i)

        upstream = Upstream({i: swap(i, sets) for i, sets in swaps.items()})
        adm = run.admit(RuntimeConfig(inflight_on_revert=mode))
        asyncio.run(run.pipeline.streams.relay(send, adm, upstream, [], 0.0, anthropic, (0, None, None), None))
        record = run.record()
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert "more_body" not in sent[-1] or not sent[-1]["more_body"]  # the response ended
    record.setdefault("inflight", None)  # written only when a revert touched the stream
    record.setdefault("reverted_by", 0)
    return [m["body"] for m in sent[1:]], record, upstream


def test_a_stream_nothing_happens_to_is_relayed_whole_and_recorded_plainly():
    bodies, record, _ = relay("cut", {})
    assert bodies == [*CHUNKS, b""]
    assert (record["status"], record["inflight"], record["reverted_by"]) == (200, None, 0)


def test_swaps_that_keep_the_streams_versions_served_change_nothing():
    bodies, record, upstream = relay("cut", {1: [V1, V2], 3: [V2, V1]})
    assert bodies == [*CHUNKS, b""] and not upstream.closed
    assert (record["status"], record["error"], record["inflight"]) == (200, None, None)


def test_finish_relays_to_the_end_and_names_the_change_that_reverted_it():
    # Served again at change 13: the first change that took it out of service is named.
    bodies, record, _ = relay("finish", {2: [V2], 3: [V1, V2]})
    assert bodies == [*CHUNKS, b""]
    assert (record["status"], record["error"]) == (200, None)
    assert (record["inflight"], record["reverted_by"]) == ("finished-after-revert", 12)


def test_cut_stops_at_the_next_chunk_closes_the_upstream_and_ends_with_an_error_event():
    for anthropic in (False, True):
        bodies, record, upstream = relay("cut", {2: [V2]}, anthropic=anthropic)
        assert bodies[:2] == CHUNKS[:2] and len(bodies) == 3, "chunk 2 came after the swap: not relayed"
        assert upstream.closed and upstream.handed == 3
        event = bodies[2].decode()
        if anthropic:
            assert event.startswith("event: error\ndata: ") and event.endswith("\n\n")
            error = json.loads(event.split("data: ", 1)[1])
            assert error["type"] == "error" and error["error"]["type"] == "api_error"
        else:
            assert event.startswith("data: ") and event.endswith("\n\n")
            error = json.loads(event[len("data: ") :])
            assert error["error"]["code"] == "cut_on_revert"
        assert "left service at change 12" in error["error"]["message"]
        assert (record["status"], record["inflight"], record["reverted_by"]) == (200, "cut-on-revert", 12)
        assert record["error"] == "cut on revert: policy v1, routing v1, config v1 left service at change 12 " + (
            "(inflight_on_revert: cut)"
        )


def test_a_stream_whose_versions_left_before_it_began_is_cut_before_its_first_chunk():
    bodies, record, upstream = relay("cut", {}, start=(V2,))
    assert len(bodies) == 1 and b"cut_on_revert" in bodies[0]
    assert upstream.handed == 0 and upstream.closed
    assert (record["inflight"], record["reverted_by"]) == ("cut-on-revert", 9)


def test_in_service_answers_for_the_generation_it_read():
    watch = InService()
    assert watch.left_service(V1) == (0, None)  # before the first swap nothing has left
    watch.swap([V1, V2], 5)
    assert watch.left_service(V1) == (1, None)
    watch.swap([V2], 6)
    assert watch.left_service(V1) == (2, 6) and watch.left_service(V2) == (2, None)
