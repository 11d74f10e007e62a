"""A stream to relay without a network (StreamRelay.relay): a real engine admits it and
writes its record into a throw-away chain."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from gatewayd import _core
from gatewayd.control.documents import RuntimeConfig
from gatewayd.control.snapshot import InService, Served
from gatewayd.server.pipeline import Pipeline

V1 = _core.Versions(1, 1, 1)
CHUNKS = [b'data: {"n": %d}\n\n' % n for n in range(4)] + [b"data: [DONE]\n\n"]
POLICY = _core.Policy(b'{"default": "allow"}', 1)
ROUTING = _core.Routing(b'{"routes": [{"match": "gpt-*", "provider": "oa"}]}', 1, [("oa", "openai")])
STREAMED = b'{"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'


class Relaying:
    """A pipeline over a fresh engine; `admit` a stream, relay it, then read its `record`."""

    def __init__(self, chains: str, in_service: InService) -> None:
        self.chains = chains
        self.engine = _core.Engine(16, 1 << 20, chains, "r1", 1 << 20)
        self.pipeline = Pipeline(self.engine, None, None, None, {}, 0, None, in_service)

    def admit(self, config: RuntimeConfig):
        served = Served(POLICY, None, ROUTING, config, V1, 0)
        return self.engine.admit(
            served=served, api="chat", tenant="acme", request_id="req-1", headers=[], body=STREAMED,
            cache=_core.CacheMode.OFF, vary="",
        )  # fmt: skip

    def record(self) -> dict:
        [record] = [json.loads(r) for r in _core.AuditReader(self.chains, "r1")]
        return record


@contextmanager
def relaying(in_service: InService | None = None) -> Iterator[Relaying]:
    with tempfile.TemporaryDirectory() as chains:
        yield Relaying(chains, in_service if in_service is not None else InService())
