"""Which upstream a request tries next (gatewayd.server.failover), and the pipeline's
loop around it (Pipeline._first_answer) with its calls replaced: no network."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import NamedTuple

import pytest

from gatewayd.control.documents import Ejection, RuntimeConfig
from gatewayd.server.answers import answering
from gatewayd.server.failover import Failover
from gatewayd.server.health import ProviderHealth
from gatewayd.server.pipeline import Pipeline
from gatewayd.upstream import UpstreamError

EJECT_AT_ONCE = Ejection(after_failures=1, for_s=10.0)
NOW = 1000.0


class Fallback(NamedTuple):
    provider: str
    body: bytes


class Admission:
    """The admission's routing, as a plain value; counts reads of `fallbacks`, which the
    real one builds (copying the body) each time it is read."""

    api = "chat"
    stream = False

    def __init__(self, provider: str, *fallbacks: str) -> None:
        self.provider = provider
        self.body = provider.encode()
        self._fallbacks = [Fallback(name, name.encode()) for name in fallbacks]
        self.fallback_reads = 0

    @property
    def fallbacks(self) -> list[Fallback]:
        self.fallback_reads += 1
        return list(self._fallbacks)


def ejected(*names: str) -> ProviderHealth:
    health = ProviderHealth()
    for name in names:
        health.failed(name, NOW, EJECT_AT_ONCE)
    return health


# Failover


def test_the_provider_is_tried_first_with_the_request_body():
    route = Failover(Admission("p", "a", "b"))
    assert route.upstream(ProviderHealth(), NOW) == ("p", b"p")
    assert route.via == (0, [])


def test_the_fallbacks_are_not_read_while_the_provider_answers():
    adm = Admission("p", "a")
    Failover(adm).upstream(ProviderHealth(), NOW)
    assert adm.fallback_reads == 0


def test_fallbacks_follow_in_order_each_with_its_body():
    route, health = Failover(Admission("p", "a", "b")), ProviderHealth()
    route.upstream(health, NOW)
    assert route.failed("status 503") is True
    assert route.upstream(health, NOW) == ("a", b"a")
    assert route.failed("timeout: no headers") is True
    assert route.upstream(health, NOW) == ("b", b"b")
    assert route.via == (2, ["p: status 503", "a: timeout: no headers"])


def test_stops_after_the_last_fallback_whose_failure_stands():
    route, health = Failover(Admission("p", "a")), ProviderHealth()
    route.upstream(health, NOW)
    route.failed("status 429")
    route.upstream(health, NOW)
    assert route.failed("status 500") is False
    # The last failure is the answer, not one failed over from.
    assert route.via == (1, ["p: status 429"])
    assert route.failed("status 500") is False
    assert route.via == (1, ["p: status 429"])


def test_an_ejected_provider_is_skipped_for_its_fallback():
    route = Failover(Admission("p", "a", "b"))
    assert route.upstream(ejected("p"), NOW + 1) == ("a", b"a")
    assert route.via == (1, ["p: ejected"])


def test_ejected_upstreams_are_skipped_until_the_last_which_is_tried_anyway():
    route = Failover(Admission("p", "a", "b"))
    assert route.upstream(ejected("p", "a", "b"), NOW + 1) == ("b", b"b")
    assert route.via == (2, ["p: ejected", "a: ejected"])


def test_an_ejected_fallback_after_a_failure_is_skipped_too():
    route, health = Failover(Admission("p", "a", "b")), ejected("a")
    assert route.upstream(health, NOW + 1) == ("p", b"p")
    route.failed("status 502")
    assert route.upstream(health, NOW + 1) == ("b", b"b")
    assert route.via == (2, ["p: status 502", "a: ejected"])


def test_without_fallbacks_the_provider_is_tried_even_when_ejected():
    route = Failover(Admission("p"))
    assert route.upstream(ejected("p"), NOW + 1) == ("p", b"p")
    assert route.failed("status 503") is False
    assert route.via == (0, [])


def test_an_ejection_ends_after_for_s():
    health = ejected("p")
    assert Failover(Admission("p", "a")).upstream(health, NOW + EJECT_AT_ONCE.for_s - 0.001)[0] == "a"
    assert Failover(Admission("p", "a")).upstream(health, NOW + EJECT_AT_ONCE.for_s)[0] == "p"


def test_asking_again_without_a_failure_stays_on_the_same_upstream():
    route, health = Failover(Admission("p", "a")), ProviderHealth()
    assert route.upstream(health, NOW) == route.upstream(health, NOW) == ("p", b"p")
    assert route.via == (0, [])


# Pipeline._first_answer around it


class Response:
    def __init__(self, name: str, status: int) -> None:
        self.name, self.status, self.closed = name, status, False

    async def aclose(self) -> None:
        self.closed = True


class Upstreams:
    """Pipeline._call's stand-in: each provider's canned outcome; the calls made."""

    def __init__(self, **outcomes) -> None:
        self.outcomes = outcomes  # name -> status, or an UpstreamError
        self.calls: list[tuple[str, bytes]] = []
        self.made: list[object] = []

    async def __call__(self, scope, name: str, api: str, stream: bool, body: bytes, config):
        self.calls.append((name, body))
        outcome = self.outcomes[name]
        made = outcome if isinstance(outcome, UpstreamError) else Response(name, outcome)
        self.made.append(made)
        return made


def first_answer(adm: Admission, upstreams: Upstreams, health: ProviderHealth | None = None):
    # Every provider speaks the requests' API: nothing is translated (tests/test_translation.py).
    providers = {name: SimpleNamespace(kind="openai", secrets=()) for name in upstreams.outcomes}
    pipeline = Pipeline(None, None, None, None, providers, 0, None)
    if health is not None:
        pipeline.health = health
    pipeline._call = upstreams
    config = RuntimeConfig(ejection=EJECT_AT_ONCE)
    answer, via, translation = asyncio.run(pipeline._first_answer({"headers": []}, adm, config))
    assert translation is None and via[2] is None
    return (answer, via[:2]), pipeline.health


def test_first_answer_the_provider_answers():
    upstreams = Upstreams(p=200, a=200)
    (answer, via), _ = first_answer(Admission("p", "a"), upstreams)
    assert answer is upstreams.made[0] and answer.name == "p" and not answer.closed
    assert via == (0, [])
    assert upstreams.calls == [("p", b"p")]


def test_first_answer_fails_over_closing_what_it_leaves_behind():
    refused = UpstreamError("unreachable", "connection refused")
    upstreams = Upstreams(p=503, a=refused, b=200)
    (answer, via), _ = first_answer(Admission("p", "a", "b"), upstreams)
    assert upstreams.calls == [("p", b"p"), ("a", b"a"), ("b", b"b")]
    assert answer.name == "b" and not answer.closed
    assert upstreams.made[0].closed
    assert via == (2, ["p: status 503", "a: unreachable: connection refused"])
    assert answering(Admission("p", "a", "b"), via) == "b"


def test_first_answer_a_client_error_is_an_answer_not_a_failure():
    upstreams = Upstreams(p=400, a=200)
    (answer, via), _ = first_answer(Admission("p", "a"), upstreams)
    assert answer.name == "p" and answer.status == 400 and via == (0, [])


def test_first_answer_the_last_failure_stands_unclosed():
    upstreams = Upstreams(p=500, a=529)
    (answer, via), health = first_answer(Admission("p", "a"), upstreams)
    assert answer.name == "a" and answer.status == 529 and not answer.closed
    assert via == (1, ["p: status 500"])
    # Both failed once, which ejects at once under this config.
    assert health.ejected(time.monotonic()) == ["a", "p"]


def test_first_answer_skips_an_ejected_provider_without_calling_it():
    health = ProviderHealth()
    health.failed("p", time.monotonic(), Ejection(after_failures=1, for_s=60.0))
    upstreams = Upstreams(p=200, a=200)
    (answer, via), _ = first_answer(Admission("p", "a"), upstreams, health)
    assert upstreams.calls == [("a", b"a")]
    assert answer.name == "a" and via == (1, ["p: ejected"])


def test_first_answer_a_success_restores_the_provider():
    health = ProviderHealth()
    health.failed("p", 0.0, Ejection(after_failures=3, for_s=10.0))
    upstreams = Upstreams(p=200)
    first_answer(Admission("p"), upstreams, health)
    assert health.failed("p", 0.0, Ejection(after_failures=2, for_s=10.0)) is False  # the count started over


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 529])
def test_first_answer_every_failover_status_fails_over(status):
    upstreams = Upstreams(p=status, a=200)
    (answer, via), _ = first_answer(Admission("p", "a"), upstreams)
    assert answer.name == "a" and via == (1, [f"p: status {status}"])
