"""Which async HTTP client should the gateway use upstream? Measure, don't guess.

For each candidate, a minimal granian ASGI pass-through (the shape of the gateway's hot
path: read body, POST it upstream, relay status, headers and body) is run in its own
process, and wrk drives it against the mock provider:

* ``c32``: ``wrk -t1 -c32 -d10s``, non-streaming chat completion (throughput);
* ``c1``: the same over one connection (latency);
* ``stream-c32``: streaming completion (11 SSE events, sent back to back) relayed as read;
* ``gaps-c32``: the same with 1 ms between events, so no client can merge them.

Besides req/s and latency, each run records the pass-through's CPU time per request
(process tree, user+system): on a shared box other tenants cut req/s, but change what a
request costs far less. ``gatewayd`` is the shipped wrapper (gatewayd.upstream), to show
its own overhead over the raw libraries.

Pinning (2 CPUs): the pass-through alone on CPU 1; the mock and wrk share CPU 0. The
``direct`` rows are wrk straight at the mock (mock on CPU 0, wrk on CPU 1). Clients run
round-robin ``--repeat`` times and medians are reported, so noise hits all alike.

    PYTHONPATH=python .venv/bin/python bench/upstream_clients.py [--duration 10] [--repeat 3] [--clients a,b]

Clients that are not importable are skipped; aiosonic, pyreqwest and pyqwest are not
project dependencies (``pip install --target DIR aiosonic pyreqwest pyqwest``, add DIR to
PYTHONPATH). ``gatewayd`` is the shipped client: HTTP/1.1 on the event loop itself, with
httptools (llhttp) parsing the responses.
Results: table on stdout, JSON (medians and every sample) in bench/results/upstream_clients.json.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # reuse the test process helpers

from support.procs import free_port, start_process, stop_process  # noqa: E402

# name -> (import name, distribution name)
CANDIDATES = {
    "pyreqwest": ("pyreqwest", "pyreqwest"),
    "aiohttp": ("aiohttp", "aiohttp"),
    "httpx": ("httpx", "httpx"),
    "httpx2": ("httpx2", "httpx2"),
    "aiosonic": ("aiosonic", "aiosonic"),
    "rnet": ("rnet", "rnet"),
    "pyqwest": ("pyqwest", "pyqwest"),
    "gatewayd": ("gatewayd.upstream", "gatewayd"),  # the shipped wrapper, to show its overhead
}
MOCK_CPU, PASSTHROUGH_CPU = "0", "1"

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","stream":%(stream)s,"messages":[{"role":"user","content":"hello there"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
wrk.headers["x-mock-chunk-delay-ms"] = "%(gap_ms)s"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p99_us":%%d,' ..
    '"errors":%%d,"non_2xx":%%d}\\n', summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), e.connect + e.read + e.write + e.timeout, e.status))
end
"""

# --- the driver ---


def wrk(url: str, connections: int, duration: int, stream: bool, gap_ms: int, cpu: str) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % {"stream": "true" if stream else "false", "gap_ms": gap_ms})
    try:
        argv = ["taskset", "-c", cpu, "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "-s", script.name, url]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script.name)
    raw = json.loads(next(line for line in out.splitlines() if line.startswith("WRK_JSON ")).split(" ", 1)[1])
    return {
        "requests": raw["requests"],
        "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "errors": raw["errors"],
        "non_2xx": raw["non_2xx"],
    }


# (name, connections, streaming, ms between stream events). With no gap, some clients hand
# over the whole burst as one chunk; a 1 ms gap makes every client pay for every event.
SCENARIOS = [("c32", 32, False, 0), ("c1", 1, False, 0), ("stream-c32", 32, True, 0), ("gaps-c32", 32, True, 1)]


def cpu_seconds(pid: int) -> float:
    """User+system CPU used so far by a process and its children (granian's workers)."""
    root = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])


def measure(name: str, base: str, path_for: dict[bool, str], wrk_cpu: str, server_pid: int, duration: int):
    """Run the scenarios against one server; CPU per request is counted on ``server_pid``'s tree.

    CPU per request is the figure to trust on a busy box: other tenants lower req/s but
    hardly change what a request costs.
    """
    rows = []
    for scenario, connections, stream, gap_ms in SCENARIOS:
        url = base + path_for[stream]
        wrk(url, connections, min(2, duration), stream, gap_ms, wrk_cpu)  # warm pools and caches
        before = cpu_seconds(server_pid)
        row = wrk(url, connections, duration, stream, gap_ms, wrk_cpu)
        row["cpu_us_per_req"] = round((cpu_seconds(server_pid) - before) / max(row["requests"], 1) * 1e6, 1)
        rows.append({"client": name, "scenario": scenario, **row})
        print(_row(rows[-1]), file=sys.stderr, flush=True)
    return rows


def measure_passthrough(name: str, mock_url: str, env: dict, duration: int) -> list[dict]:
    port = free_port()
    proc = start_process(
        ["taskset", "-c", PASSTHROUGH_CPU, sys.executable, str(HERE / "passthrough.py"), str(port)],
        f"http://127.0.0.1:{port}/",
        env={**env, "BENCH_CLIENT": name, "BENCH_UPSTREAM": mock_url},
    )
    try:
        paths = {False: "/", True: "/stream"}
        return measure(name, f"http://127.0.0.1:{port}", paths, MOCK_CPU, proc.pid, duration)
    finally:
        stop_process(proc)


def median_rows(samples: list[dict]) -> list[dict]:
    """One row per (client, scenario): the median of each figure over the repeats."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for sample in samples:
        groups.setdefault((sample["client"], sample["scenario"]), []).append(sample)
    return [
        {
            "client": client,
            "scenario": scenario,
            **{k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req")},
            "best_rps": max(r["rps"] for r in runs),
            "errors": sum(r["errors"] + r["non_2xx"] for r in runs),
            "runs": len(runs),
        }
        for (client, scenario), runs in groups.items()
    ]


HEADER = (
    "| client     | scenario   |  req/s | best req/s | p50 ms | p99 ms | CPU us/req | errors |\n"
    "|------------|------------|--------|------------|--------|--------|------------|--------|"
)


def _row(r: dict) -> str:
    errors = r["errors"] + r.get("non_2xx", 0)
    return (
        f"| {r['client']:<10} | {r['scenario']:<10} | {r['rps']:>6.0f} | {r.get('best_rps', r['rps']):>10.0f} |"
        f" {r['p50_ms']:>6.2f} | {r['p99_ms']:>6.2f} | {r['cpu_us_per_req']:>10.0f} | {errors:>6} |"
    )


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "source tree"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--repeat", type=int, default=3, help="rounds over all clients; medians are reported")
    parser.add_argument("--clients", default=",".join(CANDIDATES), help="comma-separated subset")
    args = parser.parse_args()

    clients = [c for c in args.clients.split(",") if importlib.util.find_spec(CANDIDATES[c][0]) is not None]
    skipped = sorted(set(args.clients.split(",")) - set(clients))
    env = {"PYTHONPATH": os.pathsep.join([str(HERE.parent / "python"), os.environ.get("PYTHONPATH", "")])}
    mock_port = free_port()
    mock_url = f"http://127.0.0.1:{mock_port}"
    mock = start_process(
        ["taskset", "-c", MOCK_CPU, sys.executable, "-m", "gatewayd.mock", "--port", str(mock_port)],
        f"{mock_url}/_mock/health",
        env=env,
    )
    samples = []
    try:
        # Round-robin, so a burst of noise from elsewhere on the box hits every client alike.
        for _ in range(args.repeat):
            direct = {False: "/v1/chat/completions", True: "/v1/chat/completions"}
            samples += measure("direct", mock_url, direct, PASSTHROUGH_CPU, mock.pid, args.duration)
            for name in clients:
                samples += measure_passthrough(name, mock_url, env, args.duration)
    finally:
        stop_process(mock)

    rows = median_rows(samples)
    print(
        f"medians of {args.repeat} runs of {args.duration}s"
        + (f"; not installed: {', '.join(skipped)}" * bool(skipped))
    )
    print(HEADER)
    for row in rows:
        print(_row(row))
    result = {
        "how": "granian ASGI pass-through (1 worker, uvloop) -> mock (RSGI, 1 worker); wrk -t1; "
        f"pass-through on CPU {PASSTHROUGH_CPU}, mock and wrk on CPU {MOCK_CPU} (direct: wrk on CPU "
        f"{PASSTHROUGH_CPU}); {args.duration}s per run after a 2s warm-up; medians of {args.repeat} "
        "round-robin repeats",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "versions": {name: _version(CANDIDATES[name][1]) for name in clients},
        "results": rows,
        "samples": samples,
    }
    out = HERE / "results" / "upstream_clients.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
