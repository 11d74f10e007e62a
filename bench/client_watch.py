"""What gatewayd's client watch costs on its own: a bare relay (gatewayd's upstream client,
no policy, no audit) served once without a watch and once with gatewayd's `ClientWatch`
around its upstream call, on each of granian's interfaces.

    python bench/client_watch.py [--seconds 4] [--rounds 3]

The watch is what notices a client hanging up while its request is upstream, records it
as 499 and stops the provider's work. On ASGI it costs two `receive()` calls, each a
round trip to granian's thread (the end-of-body message, then a wait for the hang-up that
is cancelled when the answer is out); on RSGI one `client_disconnect()` future. Every
variant runs at once (one worker each, on CPU 1; the mock and wrk on CPU 0), measured in
alternation, medians of `--rounds`: the relay's own CPU per request (every thread), its
voluntary context switches and its p50, at 1 and 32 connections. Writes
`bench/results/client_watch.json` and `client_watch.png`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from alternation import RESULTS, bars, save  # noqa: E402
from gateway_bench import PROMPT, pin, wrk  # noqa: E402
from servers import Servers, cpu_us, process_tree  # noqa: E402

from support.procs import free_port, start_process  # noqa: E402

VARIANTS = {  # name -> (interface, watched)
    "asgi": ("asgi", False),
    "asgi + watch": ("asgi", True),
    "rsgi": ("rsgi", False),
    "rsgi + watch": ("rsgi", True),
}
BODY = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": PROMPT}]})
LUA = f'wrk.method = "POST"\nwrk.body = [[{BODY}]]\nwrk.headers["content-type"] = "application/json"\n'
UPSTREAM_HEADERS = [("content-type", "application/json"), ("authorization", "Bearer provider-secret")]


class Relay:
    """The relay, as an ASGI app and, through gatewayd's RSGI adapter, an RSGI one."""

    def __init__(self) -> None:
        self.url = os.environ.get("BENCH_UPSTREAM", "") + "/v1/chat/completions"
        self.watched = os.environ.get("BENCH_WATCH") == "1"
        self.client = None

    async def _start(self) -> None:
        from gatewayd.upstream import UpstreamClient

        self.client = UpstreamClient(max_connections=512)
        await self.client.start()

    async def __call__(self, scope, receive, send) -> None:
        from gatewayd.server.asgi import ClientWatch, read_body, request_task, respond

        if scope["type"] == "lifespan":
            await receive()
            await self._start()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        declared = next((int(value) for name, value in scope["headers"] if name == b"content-length"), None)
        body = await read_body(receive, 1 << 20, declared)
        watch = ClientWatch(receive, request_task()) if self.watched else None
        try:
            upstream = await self.client.send("POST", self.url, UPSTREAM_HEADERS, body, 30)
            try:
                payload = await upstream.read()
            finally:
                await upstream.aclose()
        finally:
            if watch is not None:
                watch.close()
        await respond(send, upstream.status, [(b"content-type", b"application/json")], payload)

    async def __rsgi__(self, scope, protocol) -> None:
        from gatewayd.server import rsgi

        await rsgi.serve(self, scope, protocol)

    def __rsgi_init__(self, loop) -> None:
        loop.run_until_complete(self._start())


def serve(port: int, interface: str) -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels

    Granian(
        "client_watch:Relay",
        factory=True,
        working_dir=HERE,
        address="127.0.0.1",
        port=port,
        interface=Interfaces.RSGI if interface == "rsgi" else Interfaces.ASGI,
        loop=Loops.uvloop,
        workers=1,
        websockets=False,
        log_level=LogLevels.warning,
    ).serve()


def switches(pids: list[int]) -> int:
    """Voluntary context switches of every thread of `pids` so far."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    total += int(line.split()[1])
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plot-only", action="store_true", help="redraw the picture from the saved results")
    args = parser.parse_args()
    if args.plot_only:
        return plot(json.loads((RESULTS / "client_watch.json").read_text())["medians"])
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in VARIANTS}
    with Servers() as servers:
        script = servers.root / "client_watch.lua"
        script.write_text(LUA)
        relays = {}
        for name, (interface, watched) in VARIANTS.items():
            port = free_port()
            env = {"BENCH_UPSTREAM": f"http://127.0.0.1:{servers.mock_port}", "BENCH_WATCH": "1" if watched else ""}
            argv = [sys.executable, __file__, "--serve", str(port), interface]
            proc = servers._started(start_process(argv, f"http://127.0.0.1:{port}/", env=env))
            relays[name] = (f"http://127.0.0.1:{port}/", proc)
            pin(process_tree(proc.pid), "1")
        pin(process_tree(servers.mock.pid), "0")
        for round_ in range(1, args.rounds + 1):
            for name, (url, proc) in relays.items():
                for connections in (1, 32):
                    pids = process_tree(proc.pid)
                    wrk(url, script, connections, 1, "0")  # warm-up
                    cpu, woken = cpu_us(pids), switches(pids)
                    run = wrk(url, script, connections, args.seconds, "0")
                    requests = run["rps"] * args.seconds
                    run["cpu_us_per_request"] = (cpu_us(pids) - cpu) / requests
                    run["voluntary_switches_per_request"] = (switches(pids) - woken) / requests
                    for figure, value in run.items():
                        samples[name].setdefault(f"c{connections}_{figure}", []).append(value)
                    print(f"[client_watch] round {round_} {name:13s} c{connections:<2d} {run}", flush=True)
    plot(save("client_watch", __doc__.strip(), args, samples))


def plot(medians: dict) -> None:
    panels = [
        ("c1_p50_ms", "p50 at 1 connection (ms)"),
        ("c1_cpu_us_per_request", "CPU per request, 1 connection (µs)"),
        ("c1_voluntary_switches_per_request", "voluntary switches per request, 1 connection"),
        ("c32_cpu_us_per_request", "CPU per request, 32 connections (µs)"),
    ]
    title = "A bare relay through gatewayd's upstream client, with and without its client watch"
    bars(medians, panels, ["#b0b0b0", "#3a7bd5"] * 2, title, RESULTS / "client_watch.png")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]), sys.argv[3])
    else:
        main()
