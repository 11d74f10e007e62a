"""The measuring rod under gatewayd's forwarded request: an OpenAI chat request forwarded
through only what no gatewayd request can skip (the header scan, the snapshot's route,
`Engine.admit`, the upstream call, the usage read, `Engine.record`, the answer with its
version headers), none of the pipeline's other glue (fallbacks, rate limits, budgets,
client watch, translation checks, error shapes).

It is no server to deploy: a request that needs any of the skipped parts is served wrong.
It answers one question: how close to the bare pass-through can this design's own work
get? In-process, `bench/instructions.py` counts it (`upstream-essential`) and
`bench/test_pipeline.py` times it; `bench/load_bench.py --rod` serves it live on each
interface measured, through the granian settings `gatewayd serve` uses, beside gatewayd
and the pass-through:

    python bench/essential.py CONFIG      (GATEWAYD_CONFIG's file; its [server] port)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from time import perf_counter

HERE = Path(__file__).resolve().parent


def essential_upstream(app):
    """The forwarding handler over a started GatewayApp's parts (see the module's docstring)."""
    from gatewayd.server import usage
    from gatewayd.server.request_headers import cache_mode, scan

    pipeline = app.pipeline
    engine, client, agent, keys = pipeline.engine, pipeline.client, pipeline.agent, pipeline.auth.keys

    async def handler(scope, receive, send) -> None:
        arrived = perf_counter()
        seen = scan(scope["headers"], keys)
        caller = seen.caller
        served = agent.snapshot.route(caller.tenant, "chat").serve(0)
        body = (await receive())["body"]
        adm = engine.admit(
            served=served,
            api="chat",
            tenant=caller.tenant,
            request_id=seen.request_id,
            headers=scope["headers"],
            body=body,
            cache=cache_mode(seen.cache, served.config.cache),
            vary=seen.vary,
            waited_s=perf_counter() - arrived,
        )
        provider = pipeline.providers[adm.provider]
        upstream = await client.send("POST", provider.url("chat"), provider.headers([]), adm.body, 30)
        payload = await upstream.read()
        await upstream.aclose()
        counts = usage.read_answer(payload, False)[1]
        engine.record(adm, status=200, response=payload, key=caller.key, counts=counts)
        await send({"type": "http.response.start", "status": 200, "headers": adm.answer_headers(b"application/json")})
        await send({"type": "http.response.body", "body": payload})

    return handler


class Rod:
    """gatewayd's app for its lifespan and every other path, the rod for chat completions
    (built on the first one, once the app has started); on either of granian's interfaces,
    as the config's [server] interface says."""

    def __init__(self) -> None:
        from gatewayd.server.app import create_app

        self.app = create_app()
        self._rod = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/chat/completions":
            self._rod = self._rod or essential_upstream(self.app)
            return await self._rod(scope, receive, send)
        return await self.app(scope, receive, send)

    async def __rsgi__(self, scope, protocol) -> None:
        from gatewayd.server import rsgi

        await rsgi.serve(self, scope, protocol)

    def __rsgi_init__(self, loop) -> None:
        self.app.__rsgi_init__(loop)

    def __rsgi_del__(self, loop) -> None:
        self.app.__rsgi_del__(loop)


def main(config_path: str) -> None:
    from gatewayd import config
    from gatewayd.cli.serve import bootstrap, granian_server

    os.environ["GATEWAYD_CONFIG"] = os.path.abspath(config_path)
    settings = config.load(config_path)
    bootstrap(settings)
    granian_server(settings, settings.server.max_connections, "essential:Rod", HERE).serve()


if __name__ == "__main__":
    main(sys.argv[1])
