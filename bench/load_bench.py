"""Issue 15's end-to-end figures from one command, each beside the floor measured in the
same run: one gatewayd worker per interface, the bare granian pass-through, a do-nothing
granian app, the bundled mock called directly and, when asked, LiteLLM's proxy.

    python bench/load_bench.py [--quick] [--interfaces asgi,rsgi] [--litellm] [--parts ...]

Parts (all by default):
- ``targets`` (closed loop, wrk -t1, one worker; the measured server alone on CPU 1, the
  mock and wrk on CPU 0, as bench/gateway_bench.py's ``dedicated`` layout): added p50 and
  p99 at one connection (minus the direct mock's) against the pass-through's added p50 +
  40 us and 1 ms; req/s at 32 connections against 0.9 x the pass-through's; cache hits
  at 32 connections against 0.6 x the do-nothing app's; with --litellm, LiteLLM's proxy
  (one worker, same mock, same body) on the same scenarios; with --rod, bench/essential.py's
  measuring rod (only the work no forwarded request can skip, on each interface) against the same
  forwarding targets: how close this design's own work can get to the floor.
- ``rate`` (open loop, oha with coordinated-omission correction, same layout): every
  server at 25, 50 and 80% of gatewayd's measured saturation rate (ASGI, 32 connections):
  added p50, p99 and p99.9 over the direct mock at the same rate.
- ``scale`` (nothing pinned): gatewayd with 2 workers against 1 worker at 32 connections.
- ``memory``: one worker's RSS after N1 and after N2 requests with distinct cacheable
  prompts (the cache full after its max_entries), against RSS flat within 10%.
- ``idle``: CPU per second of an idle gatewayd (one worker, the embedded store: its agent
  sleeps until a flip wakes it) against the idle bare pass-through's.
Every round-robin repeat runs every server in turn, so noise hits each alike; medians are
reported. Writes bench/results/load.json (--out names it), load.png (latency against offered
load) and load-cpu.png (CPU per forwarded request at 1 and 32 connections).
``--quick`` validates the harness in about two minutes; its figures are not the ones to quote.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from gateway_bench import PROMPT, WRK_LUA, pin, policy_50, worker_rss_mb, wrk  # noqa: E402
from load_plot import plot, plot_cpu  # noqa: E402
from servers import Servers, Target, cpu_us, process_tree  # noqa: E402

RESULTS = HERE / "results"
OHA = shutil.which("oha") or str(Path.home() / ".cargo" / "bin" / "oha")
SERVER_CPUS, CLIENT_CPUS = "1", "0"  # the dedicated layout: the measured server alone on CPU 1
RATE_FRACTIONS = (0.25, 0.5, 0.8)
PLAIN = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": PROMPT}]})
CACHED = json.dumps({"model": "mock-gpt", "temperature": 0, "messages": [{"role": "user", "content": PROMPT}]})
# Each request a new temperature-0 prompt (a cache miss, then a put), numbered from `first`.
DISTINCT_LUA = """
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer %(key)s"
local n = %(first)d
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, string.format([[%(body)s]], n))
end
done = function(summary)
  local e = summary.errors
  io.write(string.format("DISTINCT %%d %%d\\n", summary.requests, e.connect + e.read + e.write + e.timeout + e.status))
end
"""
CHUNK_S = 10  # the memory run reads RSS between wrk runs of this length


class Run:
    """One bench run: its settings, the servers, and a log line per measurement."""

    def __init__(self, args: argparse.Namespace, servers: Servers):
        self.args, self.servers = args, servers
        self.started = time.monotonic()
        self.scripts: dict[tuple[str, str], Path] = {}

    def log(self, message: str) -> None:
        print(f"[load {time.monotonic() - self.started:5.0f}s] {message}", flush=True)

    def script(self, target: Target, body: str) -> Path:
        """wrk's Lua for POSTing `body` to `target` with its key (written once)."""
        path = self.scripts.get((target.key, body))
        if path is None:
            path = self.servers.root / f"wrk-{len(self.scripts)}.lua"
            path.write_text(WRK_LUA % (body, target.key))
            self.scripts[(target.key, body)] = path
        return path

    def wrk(self, target: Target, body: str, connections: int, pinned: bool = True) -> dict:
        # The direct mock keeps CPU 0 and wrk takes the server's CPU, as in gateway_bench.
        cpus = ("1" if target.name == "mock" else CLIENT_CPUS) if pinned else "0,1"
        pids = process_tree(target.pid)
        before = cpu_us(pids)
        run = wrk(target.url, self.script(target, body), connections, self.args.seconds, cpus)
        # The server's own CPU (every thread of its processes) per request: steadier than
        # req/s on a shared VM, whose speed moves between one run and the next.
        run["cpu_us_per_request"] = round((cpu_us(pids) - before) / (run["rps"] * self.args.seconds), 1)
        return run

    def oha(self, target: Target, body: str, rate: float, seconds: int) -> dict:
        """Open loop at `rate` req/s: latency counts from when each request was due."""
        cpus = "1" if target.name == "mock" else CLIENT_CPUS
        argv = ["taskset", "-c", cpus, OHA, "--no-tui", "--output-format", "json", "--latency-correction", "-w"]
        argv += ["-z", f"{seconds}s", "-q", f"{rate:.0f}", "-c", "32", "-m", "POST", "-d", body]
        argv += ["-H", "content-type: application/json", "-H", f"authorization: Bearer {target.key}", target.url]
        out = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
        codes = out.get("statusCodeDistribution", {})
        if set(codes) - {"200"} or out.get("errorDistribution"):
            raise RuntimeError(f"errors at {rate:.0f} req/s against {target.name}: {codes} {out['errorDistribution']}")
        lat = out["latencyPercentiles"]
        return {
            "rps": round(out["summary"]["requestsPerSec"], 1),
            "p50_ms": lat["p50"] * 1000,
            "p99_ms": lat["p99"] * 1000,
            "p99.9_ms": lat["p99.9"] * 1000,
        }


def median(runs: list[dict]) -> dict:
    return {key: round(statistics.median(r[key] for r in runs), 4) for key in runs[0]}


def round_robin(run: Run, repeat: int, steps: list[tuple[str, Target, callable]]) -> dict[str, dict]:
    """Each (name, target, measure) once per round, every server pinned to its CPUs in turn;
    returns name -> medians, with every sample under "samples"."""
    samples: dict[str, list[dict]] = {}
    for round_ in range(1, repeat + 1):
        for name, target, measure in steps:
            pin([target.pid], SERVER_CPUS)
            samples.setdefault(name, []).append(measure())
            run.log(f"round {round_} {name:<34} {samples[name][-1]}")
    return {name: {**median(runs), "samples": runs} for name, runs in samples.items()}


def verdict(value: float, limit: float, at_most: bool = True) -> dict:
    ok = value <= limit if at_most else value >= limit
    return {"value": round(value, 3), "limit": round(limit, 3), "pass": ok}


def part_targets(
    run: Run, mock: Target, bare: Target, noop: Target, gateways: list[Target], peers: list[Target], rods: list[Target]
):
    steps = [
        ("mock c1", mock, lambda: run.wrk(mock, PLAIN, 1)),
        ("mock c32", mock, lambda: run.wrk(mock, PLAIN, 32)),
        ("passthrough c1", bare, lambda: run.wrk(bare, PLAIN, 1)),
        ("passthrough c32", bare, lambda: run.wrk(bare, PLAIN, 32)),
        ("do-nothing app c32", noop, lambda: run.wrk(noop, PLAIN, 32)),
    ]
    for t in [*gateways, *rods, *peers]:
        steps += [(f"{t.name} c1", t, lambda t=t: run.wrk(t, PLAIN, 1))]
        steps += [(f"{t.name} c32", t, lambda t=t: run.wrk(t, PLAIN, 32))]
    steps += [(f"{t.name} cache hits c32", t, lambda t=t: run.wrk(t, CACHED, 32)) for t in gateways]
    runs = round_robin(run, run.args.repeat, steps)
    added = lambda name, p: (runs[f"{name} c1"][p] - runs["mock c1"][p]) * 1000  # noqa: E731
    floor_p50 = added("passthrough", "p50_ms")
    figures: dict[str, dict] = {
        "floors": {
            "passthrough_added_p50_us": round(floor_p50),
            "passthrough_added_p99_us": round(added("passthrough", "p99_ms")),
            "passthrough_c32_rps": runs["passthrough c32"]["rps"],
            "passthrough_cpu_us_per_request_c1": runs["passthrough c1"]["cpu_us_per_request"],
            "passthrough_cpu_us_per_request_c32": runs["passthrough c32"]["cpu_us_per_request"],
            "do_nothing_app_c32_rps": runs["do-nothing app c32"]["rps"],
            "mock_c1_p50_us": round(runs["mock c1"]["p50_ms"] * 1000),
            "mock_c32_rps": runs["mock c32"]["rps"],
        }
    }
    forwarding = lambda name: {  # noqa: E731
        "added_p50_c1_us": verdict(added(name, "p50_ms"), floor_p50 + 40),
        "added_p99_c1_us": verdict(added(name, "p99_ms"), 1000),
        "c32_rps_over_passthrough": verdict(
            runs[f"{name} c32"]["rps"] / runs["passthrough c32"]["rps"], 0.9, at_most=False
        ),
        "cpu_us_per_request_c1": runs[f"{name} c1"]["cpu_us_per_request"],
        "cpu_us_per_request_c32": runs[f"{name} c32"]["cpu_us_per_request"],
    }
    for t in gateways:
        figures[t.name] = {
            **forwarding(t.name),
            "cache_hits_c32_rps_over_do_nothing_app": verdict(
                runs[f"{t.name} cache hits c32"]["rps"] / runs["do-nothing app c32"]["rps"], 0.6, at_most=False
            ),
            "worker_rss_mb": round(worker_rss_mb(t.pid), 1),
        }
    for rod in rods:
        figures[rod.name] = forwarding(rod.name)
    for peer in peers:  # gatewayd (the first interface) against the peer, same scenarios
        ours = gateways[0].name
        figures[peer.name] = {
            "what": peer.note,
            "added_p50_c1_us": round(added(peer.name, "p50_ms")),
            "added_p99_c1_us": round(added(peer.name, "p99_ms")),
            "c32_rps": runs[f"{peer.name} c32"]["rps"],
            f"{ours}_c32_rps_over_it": round(runs[f"{ours} c32"]["rps"] / runs[f"{peer.name} c32"]["rps"], 2),
            f"its_added_p50_c1_over_{ours}s": round(added(peer.name, "p50_ms") / added(ours, "p50_ms"), 2),
        }
    return figures, runs


def part_rate(run: Run, saturation: float, mock: Target, bare: Target, gateways: list[Target]) -> dict:
    rates = [round(saturation * f) for f in RATE_FRACTIONS]
    steps = [
        (f"{t.name} @{rate}", t, lambda t=t, rate=rate: run.oha(t, PLAIN, rate, run.args.seconds))
        for rate in rates
        for t in [mock, bare, *gateways]
    ]
    runs = round_robin(run, run.args.repeat, steps)
    table: dict[str, dict] = {}
    for fraction, rate in zip(RATE_FRACTIONS, rates, strict=True):
        base = runs[f"mock @{rate}"]
        row: dict = {"offered_rps": rate}
        for t in [mock, bare, *gateways]:
            got = runs[f"{t.name} @{rate}"]
            row[t.name] = {f"{p}_us": round(got[f"{p}_ms"] * 1000) for p in ("p50", "p99", "p99.9")}
            if t is not mock:
                row[t.name]["added"] = {
                    p: round((got[f"{p}_ms"] - base[f"{p}_ms"]) * 1000) for p in ("p50", "p99", "p99.9")
                }
            row[t.name]["achieved_rps"] = got["rps"]
        table[f"{round(fraction * 100)}%"] = row
    return {"saturation_rps": saturation, "by_load": table, "runs": runs}


def part_scale(run: Run, one: Target, two: Target) -> dict:
    for t in (one, two):
        pin([t.pid], "0,1")
    samples: dict[str, list[dict]] = {}
    for round_ in range(1, run.args.repeat + 1):
        for t in (one, two):
            for body, label in ((PLAIN, "c32"), (CACHED, "cache hits c32")):
                samples.setdefault(f"{t.name} {label}", []).append(run.wrk(t, body, 32, pinned=False))
                run.log(f"round {round_} {t.name} {label}: {samples[f'{t.name} {label}'][-1]}")
    med = {name: median(runs) for name, runs in samples.items()}
    return {
        "two_workers_over_one_c32": round(med[f"{two.name} c32"]["rps"] / med[f"{one.name} c32"]["rps"], 2),
        "two_workers_over_one_cache_hits": round(
            med[f"{two.name} cache hits c32"]["rps"] / med[f"{one.name} cache hits c32"]["rps"], 2
        ),
        "runs": med,
    }


def part_memory(run: Run, target: Target, checkpoints: list[int]) -> dict:
    """wrk runs of CHUNK_S seconds, each prompt new, until each checkpoint's count of
    requests is passed; the worker's RSS after the run that passed it."""
    pin([target.pid], SERVER_CPUS)
    body = PLAIN.replace('"messages"', '"temperature": 0, "messages"').replace(PROMPT, PROMPT + " request %d")
    rss: dict[str, dict] = {}
    sent = 0
    script = run.servers.root / "distinct.lua"
    for checkpoint in checkpoints:
        while sent < checkpoint:
            # Past the last prompt sent, and past those still in flight when wrk stopped.
            script.write_text(DISTINCT_LUA % {"key": target.key, "first": sent + 64, "body": body})
            argv = ["taskset", "-c", CLIENT_CPUS, "wrk", "-t1", "-c32", f"-d{CHUNK_S}s", "-s", str(script), target.url]
            out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
            answered, failed = (int(x) for x in out.split("DISTINCT ")[1].split()[:2])
            if failed:
                raise RuntimeError(f"memory run: {failed} of {answered} requests failed")
            sent += answered + 64
        rss[str(checkpoint)] = {"requests": sent, "rss_mb": round(worker_rss_mb(target.pid), 1)}
        run.log(f"memory: {sent} distinct requests, worker RSS {rss[str(checkpoint)]['rss_mb']} MB")
    first, last = rss[str(checkpoints[0])]["rss_mb"], rss[str(checkpoints[-1])]["rss_mb"]
    return {"rss_after": rss, "growth": verdict(last / first - 1, 0.10)}


def idle_cpu_ms_per_s(target: Target, seconds: float) -> float:
    """CPU time of the worker processes (not granian's supervisor) per second of idling."""
    workers = [psutil.Process(target.pid), *psutil.Process(target.pid).children(recursive=True)]
    cpu = lambda: sum(sum(p.cpu_times()[:2]) for p in workers)  # noqa: E731
    before = cpu()
    time.sleep(seconds)
    return round((cpu() - before) / seconds * 1000, 3)


def part_idle(run: Run, gateway: Target, floor: Target) -> dict:
    """CPU of an idle gatewayd (embedded store: its agent sleeps until a flip or its 1 s
    heartbeat) against the bare pass-through's."""
    idle: dict[str, list[float]] = {gateway.name: [], floor.name: []}
    for _ in range(run.args.repeat):
        for t in (gateway, floor):
            idle[t.name].append(idle_cpu_ms_per_s(t, max(5, run.args.seconds)))
    run.log(f"idle CPU ms/s: {idle}")
    return {"cpu_ms_per_s": {name: statistics.median(v) for name, v in idle.items()}, "samples": idle}


def verdict_lines(result: dict) -> list[str]:
    """Every pass/fail figure of the run, one line each, with its limit."""
    lines = []
    checks = {name: figures for name, figures in result.get("targets", {}).items() if name != "floors"}
    if "memory" in result:
        checks["memory"] = {"rss_growth": result["memory"]["growth"]}
    for name, figures in checks.items():
        for figure, value in figures.items():
            if isinstance(value, dict) and "pass" in value:
                mark = "ok  " if value["pass"] else "MISS"
                lines.append(f"{mark} {name:<16} {figure:<40} {value['value']:>10g}  limit {value['limit']:g}")
            elif figure.startswith("cpu_us"):
                lines.append(f"     {name:<16} {figure:<40} {value:>10g}")
    for name, value in result.get("targets", {}).get("floors", {}).items():
        lines.append(f"     floor            {name:<40} {value:>10g}")
    for name, figures in result.get("targets", {}).items():
        if "what" in figures:  # a peer
            lines += [f"     {name:<16} {k:<40} {v:>10g}" for k, v in figures.items() if k != "what"]
    for key in ("two_workers_over_one_c32", "two_workers_over_one_cache_hits"):
        if "scale" in result:
            lines.append(f"     scale            {key:<40} {result['scale'][key]:>10g}")
    for name, value in result.get("idle", {}).get("cpu_ms_per_s", {}).items():
        lines.append(f"     idle CPU ms/s    {name:<40} {value:>10g}")
    return lines


PARTS = ("targets", "rate", "scale", "memory", "idle")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--quick", action="store_true", help="2s runs, 1 round, small memory run: checks the harness")
    parser.add_argument("--seconds", type=int, default=10, help="per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="round-robin rounds; medians are reported")
    parser.add_argument("--interfaces", default="asgi,rsgi", help="gatewayd's [server] interface values to measure")
    parser.add_argument("--litellm", action="store_true", help="also LiteLLM's proxy (creates its venv once)")
    parser.add_argument("--rod", action="store_true", help="also bench/essential.py's measuring rod (targets)")
    parser.add_argument("--out", default="load", help="results file name in bench/results, without .json")
    parser.add_argument("--memory", default="100000,1000000", help="request counts at which RSS is read")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of: " + ", ".join(PARTS))
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.repeat, args.memory = 2, 1, "20000,40000"
    parts = args.parts.split(",")
    if unknown := set(parts) - set(PARTS):
        parser.error(f"unknown parts {sorted(unknown)}")
    if "rate" in parts and not Path(OHA).exists():
        parser.error(f"oha not found (looked for {OHA}): make bench-tools installs it")
    result: dict = {
        "how": __doc__.split("\n\n")[2].strip(),
        "command": " ".join(["python", "bench/load_bench.py", *sys.argv[1:]]),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_at_start": os.getloadavg()},
        "seconds": args.seconds,
        "repeat": args.repeat,
    }
    with Servers() as servers:
        run = Run(args, servers)
        policy = policy_50()
        mock, bare = servers.mock, servers.passthrough()
        noop = servers.passthrough("canned", name="do-nothing app")
        gateways, skipped = [], {}
        for interface in args.interfaces.split(","):
            try:
                gateways.append(servers.gateway(policy, interface))
            except RuntimeError as exc:  # an interface this tree does not serve
                skipped[interface] = str(exc).splitlines()[-1][:300]
                run.log(f"gatewayd with interface {interface} did not start: {skipped[interface]}")
        result["interfaces_skipped"] = skipped
        peers = [servers.litellm("mock-gpt")] if args.litellm else []
        rods = [servers.essential(policy, t.name.removeprefix("gatewayd-")) for t in gateways] if args.rod else []
        for t in [bare, noop, *gateways, *rods, *peers]:  # warm-up: pools, the cache entry
            wrk(t.url, run.script(t, CACHED), 8, 2, "0,1")
        saturation = 0.0
        if "targets" in parts:
            result["targets"], runs = part_targets(run, mock, bare, noop, gateways, peers, rods)
            saturation = runs[f"{gateways[0].name} c32"]["rps"]
            result["targets_runs"] = runs
        if saturation == 0.0 and "rate" in parts:
            pin([gateways[0].pid], SERVER_CPUS)
            saturation = run.wrk(gateways[0], PLAIN, 32)["rps"]
        if "rate" in parts:
            result["rate"] = part_rate(run, saturation, mock, bare, gateways)
        if "scale" in parts:
            result["scale"] = part_scale(run, gateways[0], servers.gateway(policy, workers=2))
        if "memory" in parts:
            checkpoints = [int(n) for n in args.memory.split(",")]
            result["memory"] = part_memory(run, servers.gateway(policy, name="gatewayd-memory"), checkpoints)
        if "idle" in parts:
            result["idle"] = part_idle(run, gateways[0], bare)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("load-quick.json" if args.quick else f"{args.out}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    pictures = []
    if "rate" in result:
        pictures.append(out.with_suffix(".png"))
        plot(result, pictures[-1])
    if "targets" in result:
        pictures.append(out.with_name(f"{out.stem}-cpu.png"))
        plot_cpu(result, pictures[-1])
    print("\n".join(verdict_lines(result)))
    run.log(f"wrote {', '.join(str(p.relative_to(HERE.parent)) for p in [out, *pictures])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
