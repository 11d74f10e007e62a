"""What the gateway adds over calling the provider directly (issue 2's measurements).

One gateway worker with the full pipeline (auth, a 50-rule policy with 10 regexes and 40
keywords, cache lookup, audit append, upstream call) in front of the bundled mock, under
the shipped runtime config (examples/runtime.yaml); wrk (compiled) drives both the gateway
and the mock directly, in the same run:

    python bench/gateway_bench.py [--seconds 10]

- added latency: gateway p50/p99 minus direct p50/p99, at 1 connection, and beside it a
  bare granian ASGI pass-through on the same client (bench/passthrough.py): the floor
  that the fixed stack sets before gatewayd does anything;
- throughput at saturation (32 connections), and on cache hits;
- resident memory of the worker after the runs.

Every scenario runs in each of three CPU layouts (2 cores), re-pinning the running
processes with taskset between them:
- ``dedicated``: the measured server (gateway or bare pass-through) alone on CPU 1, the
  mock and wrk on CPU 0: one core of its own, Rust I/O threads included;
- ``shared``: nothing pinned, the scheduler places every thread: the layout in which the
  issue's reference figures for a bare pass-through (about 4,900 req/s with aiohttp,
  7,800 with pyreqwest) are reproduced here;
- ``one-core`` (1 connection only): wrk, mock and server all on CPU 1, so latency is the
  path's own work: in this VM every wake-up across cores costs about 22 us (a raw uvloop
  echo answers in 18 us on one core, 62 us across two), and a gateway request crosses
  cores four times where a direct call crosses twice.
Writes bench/results/gateway.json and gateway.png.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from servers import SHIPPED_RUNTIME as SHIPPED_RUNTIME  # noqa: E402  (bench/test_pipeline.py's import)
from servers import Servers  # noqa: E402

from support.gateway import KEYS  # noqa: E402

PROMPT = (
    "Summarise the attached quarterly report for the board. Focus on revenue growth, churn, "
    "the new enterprise tier and hiring plans; keep it under two hundred words and avoid jargon. "
) * 3
WRK_LUA = """
wrk.method = "POST"
wrk.body = [[%s]]
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer %s"
"""


def policy_50() -> str:
    """50 rules: 10 regex, 20 keyword, 20 on tenant/model/headers; none matches the bench prompt."""
    rules = []
    regexes = [
        r"\b(?:\d[ -]?){13,16}\b",
        r"\b\d{3}-\d{2}-\d{4}\b",
        r"(?i)api[_-]?key\s*[:=]",
        r"sk-[A-Za-z0-9]{20,}",
        r"\bAKIA[0-9A-Z]{16}\b",
        r"(?i)-----BEGIN [A-Z ]*PRIVATE KEY-----",
        r"\b[A-Z]{2}\d{2}[A-Z0-9]{11,30}\b",
        r"(?i)\bpassw(?:or)?d\s*[:=]",
        r"\b\d{1,3}(?:\.\d{1,3}){3}\b",
        r"(?i)ignore (?:all )?previous instructions",
    ]
    for i, rx in enumerate(regexes):
        rules.append({"id": f"regex-{i}", "when": {"prompt": {"regex": [rx]}}, "action": "deny"})
    for i in range(20):
        words = [f"forbidden-term-{i}-a", f"forbidden-term-{i}-b"]
        rules.append(
            {"id": f"kw-{i}", "when": {"prompt": {"keywords": words, "case_insensitive": True}}, "action": "deny"}
        )
    for i in range(20):
        when = [
            {"tenants": [f"tenant-{i}"]},
            {"models": [f"legacy-model-{i}*"]},
            {"headers": {"x-team": [f"team-{i}"]}},
        ][i % 3]
        rules.append({"id": f"ctx-{i}", "when": when, "action": "deny"})
    return json.dumps({"default": "allow", "rules": rules})


LAYOUTS = {  # layout -> (server CPUs, mock CPUs, wrk CPUs)
    "dedicated": ("1", "0", "0"),
    "shared": ("0,1", "0,1", "0,1"),
    "one-core": ("1", "1", "1"),
}


def pin(pids: list[int], cpus: str) -> None:
    """Every thread of every process (and its children) onto `cpus`."""
    for pid in pids:
        tree = [str(pid), *subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]
        for p in tree:
            subprocess.run(["taskset", "-a", "-cp", cpus, p], capture_output=True, check=True)


def wrk(url: str, script: Path, connections: int, seconds: int, cpu: str) -> dict:
    out = subprocess.run(
        ["taskset", "-c", cpu, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"errors in the run against {url}:\n{out}")
    lat = {p: _ms(v) for p, v in re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return {"rps": rps, "p50_ms": lat["50"], "p99_ms": lat["99"]}


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def worker_rss_mb(master_pid: int) -> float:
    children = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True).stdout.split()
    rss = [int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]) for pid in children]
    return max(rss) / 1024


SCENARIOS = (  # name, target, script, connections
    ("direct_c1", "direct", "direct", 1),
    ("passthrough_c1", "passthrough", "direct", 1),
    ("gateway_c1", "gateway", "plain", 1),
    ("direct_c32", "direct", "direct", 32),
    ("passthrough_c32", "passthrough", "direct", 32),
    ("gateway_c32", "gateway", "plain", 32),
    ("gateway_cache_hits_c32", "gateway", "hits", 32),
)


def measure(
    seconds: int, layouts: list[str], repeat: int, scenarios=SCENARIOS, warmup_s: int = 3
) -> tuple[dict[str, dict[str, list[dict]]], float]:
    """Starts the mock, a gateway worker and the bare pass-through, and runs each scenario
    under wrk for `seconds` in each layout, `repeat` rounds round-robin; returns the runs
    (layout -> scenario -> one dict per round) and the worker's RSS in MB after them."""
    with Servers() as servers:
        gw, bare, mock = servers.gateway(policy_50()), servers.passthrough(), servers.mock
        root = servers.root
        body = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": PROMPT}]})
        cached = json.dumps({"model": "mock-gpt", "temperature": 0, "messages": [{"role": "user", "content": PROMPT}]})
        scripts = {"plain": root / "plain.lua", "hits": root / "hits.lua", "direct": root / "direct.lua"}
        scripts["plain"].write_text(WRK_LUA % (body, KEYS["acme"]))
        scripts["hits"].write_text(WRK_LUA % (cached, KEYS["acme"]))
        scripts["direct"].write_text(WRK_LUA % (body, "provider-secret"))
        urls = {"direct": mock.url, "passthrough": bare.url, "gateway": gw.url}
        wrk(urls["gateway"], scripts["plain"], 8, warmup_s, "0,1")  # warm-up: pools, cache entry
        samples: dict[str, dict[str, list[dict]]] = {}
        for round_ in range(1, repeat + 1):  # round-robin, so drift hits every layout alike
            for layout in layouts:
                server_cpus, mock_cpus, wrk_cpus = LAYOUTS[layout]
                pin([gw.pid, bare.pid], server_cpus)
                pin([mock.pid], mock_cpus)
                for name, target, script, conns in scenarios:
                    if layout == "one-core" and conns != 1:
                        continue  # one core for everything says nothing about throughput
                    # Direct calls put wrk where the server would be: the mock keeps its CPU.
                    cpus = server_cpus if target == "direct" and layout == "dedicated" else wrk_cpus
                    run = wrk(urls[target], scripts[script], conns, seconds, cpus)
                    samples.setdefault(layout, {}).setdefault(name, []).append(run)
                    print(f"round {round_} {layout:<10} {name:<24} {run}", flush=True)
        rss = worker_rss_mb(gw.pid)
    return samples, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help="comma-separated: " + ", ".join(LAYOUTS))
    parser.add_argument("--repeat", type=int, default=3, help="rounds over all layouts; medians are reported")
    args = parser.parse_args()
    samples, rss = measure(args.seconds, args.layouts.split(","), args.repeat)
    layouts = {layout: {name: _median(runs) for name, runs in by_name.items()} for layout, by_name in samples.items()}
    summary = {
        "how": f"1 gateway worker + mock (1 worker) + wrk -t1 on {os.cpu_count()} cores; {args.seconds}s per run, "
        f"medians of {args.repeat} round-robin rounds; "
        "50-rule policy (10 regex, 40 keywords); ~600-byte prompt; layouts: " + json.dumps(LAYOUTS),
        "worker_rss_mb": round(rss, 1),
        "layouts": {name: _figures(runs) for name, runs in layouts.items()},
        "runs": layouts,
        "samples": samples,
    }
    out = HERE / "results" / "gateway.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    plot(summary, out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("runs", "samples")}, indent=2))


def _median(runs: list[dict]) -> dict:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def _figures(runs: dict) -> dict:
    """The issue's figures from one layout's runs."""
    added = lambda p, base: round((runs["gateway_c1"][p] - runs[base][p]) * 1000)  # noqa: E731
    figures = {
        "added_latency_p50_us": added("p50_ms", "direct_c1"),
        "added_latency_p99_us": added("p99_ms", "direct_c1"),
        "pipeline_over_passthrough_p50_us": added("p50_ms", "passthrough_c1"),
    }
    for name in ("gateway_c32", "gateway_cache_hits_c32", "direct_c32", "passthrough_c32"):
        if name in runs:
            figures[f"{name}_rps"] = runs[name]["rps"]
    return figures


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = summary["layouts"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    names = list(figures)
    x = range(len(names))
    p50 = [figures[n]["added_latency_p50_us"] for n in names]
    p99 = [figures[n]["added_latency_p99_us"] for n in names]
    floor = [p - figures[n]["pipeline_over_passthrough_p50_us"] for p, n in zip(p50, names, strict=True)]
    left.bar([i - 0.2 for i in x], floor, 0.4, color="#9ecae1", label="p50: bare pass-through (the floor)")
    left.bar([i - 0.2 for i in x], [p - f for p, f in zip(p50, floor, strict=True)], 0.4, bottom=floor, color="#3182bd",
             label="p50: gatewayd's pipeline on top")  # fmt: skip
    left.bar([i + 0.2 for i in x], p99, 0.4, color="#fd8d3c", label="p99")
    for i, (a, b) in enumerate(zip(p50, p99, strict=True)):
        left.text(i - 0.2, a, str(a), ha="center", va="bottom", fontsize=8)
        left.text(i + 0.2, b, str(b), ha="center", va="bottom", fontsize=8)
    left.axhline(250, color="crimson", linestyle="--", label="target p50 250 µs")
    left.axhline(1000, color="orange", linestyle=":", label="target p99 1 ms")
    left.set_xticks(list(x), names)
    left.set_ylabel("added latency at 1 connection (µs)")
    left.set_title("gatewayd minus calling the mock directly")
    left.set_ylim(0, max(p99 + [1000]) * 1.3)
    left.legend(fontsize=7, loc="upper left")
    series = [
        ("direct_c32_rps", "mock direct"),
        ("passthrough_c32_rps", "bare pass-through"),
        ("gateway_c32_rps", "gatewayd"),
        ("gateway_cache_hits_c32_rps", "gatewayd cache hits"),
    ]
    layouts = [n for n in names if "gateway_c32_rps" in figures[n]]
    width = 0.8 / len(series)
    for j, (key, label) in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(layouts))]
        values = [figures[n][key] for n in layouts]
        right.bar(xs, values, width, label=label)
        for xv, v in zip(xs, values, strict=True):
            right.text(xv, v, f"{v / 1000:.1f}k", ha="center", va="bottom", fontsize=7)
    right.axhline(5000, color="crimson", linestyle="--", label="target 5,000 req/s")
    right.axhline(20000, color="orange", linestyle=":", label="target 20,000 req/s (hits)")
    right.set_xticks(range(len(layouts)), layouts)
    right.set_ylabel("requests/s at 32 connections")
    right.set_title(f"one worker (RSS {summary['worker_rss_mb']} MB)")
    right.set_ylim(0, max(figures[n][key] for n in layouts for key, _ in series) * 1.35)
    right.legend(fontsize=7, ncol=2, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
