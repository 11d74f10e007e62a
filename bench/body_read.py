"""What reading granian's end-of-body message costs: a bare ASGI app that reads a request
body and answers, once reading until the last message (`more_body` false), once stopping
at the Content-Length, as gatewayd's `read_body` does.

    python bench/body_read.py [--seconds 4] [--rounds 3]

granian hands an ASGI app the body of a Content-Length request in one message marked
`more_body`, then an empty message that ends it. Each `receive()` is a future that granian
completes from its own thread, so fetching that last, empty message is a round trip
between threads: at one connection it is latency, at 32 CPU. Both apps run at once (one
worker each, on CPU 1; wrk on CPU 0), measured in alternation, medians of `--rounds`.
Writes `bench/results/body_read.json` and `body_read.png`.
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
from passthrough import serve  # noqa: E402
from servers import cpu_us, process_tree  # noqa: E402

from support.procs import free_port, start_process, stop_process  # noqa: E402

WAYS = {"to the last message": "", "by Content-Length": "1"}
BODY = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": PROMPT}]})
LUA = f'wrk.method = "POST"\nwrk.body = [[{BODY}]]\nwrk.headers["content-type"] = "application/json"\n'
ANSWER = b'{"ok":true}'
BY_LENGTH = os.environ.get("BODY_READ_BY_LENGTH") == "1"


async def app(scope, receive, send) -> None:
    """Reads the body (to its last message, or by its Content-Length) and answers."""
    if scope["type"] != "http":
        return
    declared = next((int(value) for name, value in scope["headers"] if name == b"content-length"), None)
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body") or (BY_LENGTH and size == declared):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": ANSWER})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    script = RESULTS / ".body_read.lua"
    script.write_text(LUA)
    servers = {}
    try:
        for way, flag in WAYS.items():
            port = free_port()
            argv = [sys.executable, __file__, "--serve", str(port)]
            proc = start_process(argv, f"http://127.0.0.1:{port}/", env={"BODY_READ_BY_LENGTH": flag})
            servers[way] = (f"http://127.0.0.1:{port}/", proc)
            pin(process_tree(proc.pid), "1")
        samples: dict[str, dict[str, list[float]]] = {way: {} for way in WAYS}
        for round_ in range(1, args.rounds + 1):
            for way, (url, proc) in servers.items():
                for connections in (1, 32):
                    pids = process_tree(proc.pid)
                    wrk(url, script, connections, 1, "0")  # warm-up
                    before = cpu_us(pids)
                    run = wrk(url, script, connections, args.seconds, "0")
                    run["cpu_us_per_request"] = (cpu_us(pids) - before) / (run["rps"] * args.seconds)
                    for name, value in run.items():
                        samples[way].setdefault(f"c{connections}_{name}", []).append(value)
                    print(f"[body_read] round {round_} {way:20s} c{connections:<2d} {run}", flush=True)
    finally:
        for _, proc in servers.values():
            stop_process(proc)
        script.unlink(missing_ok=True)
    medians = save("body_read", __doc__.strip(), args, samples)
    panels = [
        ("c1_p50_ms", "p50 at 1 connection (ms)"),
        ("c32_rps", "req/s at 32 connections"),
        ("c32_cpu_us_per_request", "CPU per request at 32 connections (µs)"),
    ]
    title = "A bare granian ASGI app: the body read to its last message, or by its Content-Length"
    bars(medians, panels, ["#b0b0b0", "#3a7bd5"], title, RESULTS / "body_read.png")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]), "body_read:app", factory=False)
    else:
        main()
