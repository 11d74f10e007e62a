"""What the gateway adds over calling the provider directly (issue 2's measurements).

One gateway worker with the full pipeline (auth, a 50-rule policy with 10 regexes and 40
keywords, cache lookup, audit append, upstream call) in front of the bundled mock; wrk
(compiled) drives both the gateway and the mock directly, in the same run:

    python bench/gateway_bench.py [--seconds 10]

- added latency: gateway p50/p99 minus direct p50/p99, at 1 connection, and beside it a
  bare granian ASGI pass-through on the same client (bench/passthrough.py): the floor
  that the fixed stack sets before gatewayd does anything;
- throughput at saturation (32 connections), and on cache hits;
- resident memory of the worker after the runs.
The gateway worker runs on CPU 1, the mock on CPU 0, and wrk on the core the measured
process does not use (taskset), so the gateway has one core of its own, as in production. Writes bench/results/gateway.json and
gateway.png.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from support.gateway import KEYS, Gateway  # noqa: E402
from support.procs import free_port, start_process, stop_process  # noqa: E402

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
        r"\b(?:\d[ -]?){13,16}\b", r"\b\d{3}-\d{2}-\d{4}\b", r"(?i)api[_-]?key\s*[:=]", r"sk-[A-Za-z0-9]{20,}",
        r"\bAKIA[0-9A-Z]{16}\b", r"(?i)-----BEGIN [A-Z ]*PRIVATE KEY-----", r"\b[A-Z]{2}\d{2}[A-Z0-9]{11,30}\b",
        r"(?i)\bpassw(?:or)?d\s*[:=]", r"\b\d{1,3}(?:\.\d{1,3}){3}\b", r"(?i)ignore (?:all )?previous instructions",
    ]
    for i, rx in enumerate(regexes):
        rules.append({"id": f"regex-{i}", "when": {"prompt": {"regex": [rx]}}, "action": "deny"})
    for i in range(20):
        words = [f"forbidden-term-{i}-a", f"forbidden-term-{i}-b"]
        rules.append({"id": f"kw-{i}", "when": {"prompt": {"keywords": words, "case_insensitive": True}}, "action": "deny"})
    for i in range(20):
        when = [{"tenants": [f"tenant-{i}"]}, {"models": [f"legacy-model-{i}*"]}, {"headers": {"x-team": [f"team-{i}"]}}][i % 3]
        rules.append({"id": f"ctx-{i}", "when": when, "action": "deny"})
    return json.dumps({"default": "allow", "rules": rules})


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gwbench-"))
    mock_port = free_port()
    mock = start_process(
        ["taskset", "-c", "0", sys.executable, "-m", "gatewayd.mock", "--port", str(mock_port)],
        f"http://127.0.0.1:{mock_port}/_mock/health",
    )
    gw = Gateway(root, mock_port, free_port())
    (root / "policy.yaml").write_text(policy_50())
    gw.proc = start_process(["taskset", "-c", "1", *gw.cli_argv("serve")], gw.url + "/healthz", timeout=60)
    # The floor under the gateway: a bare granian ASGI app relaying through the same client.
    bare_port = free_port()
    bare = start_process(
        ["taskset", "-c", "1", sys.executable, str(HERE / "passthrough.py"), str(bare_port)],
        f"http://127.0.0.1:{bare_port}/",
        env={"BENCH_CLIENT": "gatewayd", "BENCH_UPSTREAM": f"http://127.0.0.1:{mock_port}"},
    )
    results: dict[str, dict] = {}
    try:
        body = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": PROMPT}]})
        cached = json.dumps({"model": "mock-gpt", "temperature": 0, "messages": [{"role": "user", "content": PROMPT}]})
        plain, hits = root / "plain.lua", root / "hits.lua"
        plain.write_text(WRK_LUA % (body, KEYS["acme"]))
        hits.write_text(WRK_LUA % (cached, KEYS["acme"]))
        direct = f"http://127.0.0.1:{mock_port}/v1/chat/completions"
        passthrough = f"http://127.0.0.1:{bare_port}/v1/chat/completions"
        through = gw.url + "/v1/chat/completions"
        (root / "direct.lua").write_text(WRK_LUA % (body, "provider-secret"))
        for name, url, script, conns in (
            ("warmup", through, plain, 8),
            ("direct_c1", direct, root / "direct.lua", 1),
            ("passthrough_c1", passthrough, root / "direct.lua", 1),
            ("gateway_c1", through, plain, 1),
            ("direct_c32", direct, root / "direct.lua", 32),
            ("passthrough_c32", passthrough, root / "direct.lua", 32),
            ("gateway_c32", through, plain, 32),
            ("gateway_cache_hits_c32", through, hits, 32),
        ):
            cpu = "1" if url == direct else "0"  # wrk never shares a core with the process it measures
            results[name] = wrk(url, script, conns, 3 if name == "warmup" else args.seconds, cpu)
            print(f"{name:<24} {results[name]}", flush=True)
        rss = worker_rss_mb(gw.proc.pid)
    finally:
        gw.stop()
        stop_process(bare)
        stop_process(mock)
    del results["warmup"]
    summary = {
        "how": "1 gateway worker (CPU 1) + mock (1 worker, CPU 0) + wrk -t1 (CPU 0); "
        f"{args.seconds}s per run; 50-rule policy (10 regex, 40 keywords); ~600-byte prompt",
        "added_latency_p50_us": round((results["gateway_c1"]["p50_ms"] - results["direct_c1"]["p50_ms"]) * 1000),
        "added_latency_p99_us": round((results["gateway_c1"]["p99_ms"] - results["direct_c1"]["p99_ms"]) * 1000),
        "gateway_rps_c32": results["gateway_c32"]["rps"],
        "gateway_cache_hit_rps_c32": results["gateway_cache_hits_c32"]["rps"],
        "direct_rps_c32": results["direct_c32"]["rps"],
        "passthrough_rps_c32": results["passthrough_c32"]["rps"],
        "pipeline_over_passthrough_p50_us": round(
            (results["gateway_c1"]["p50_ms"] - results["passthrough_c1"]["p50_ms"]) * 1000
        ),
        "worker_rss_mb": round(rss, 1),
        "runs": results,
        "machine": f"{os.cpu_count()} cores",
    }
    out = HERE / "results" / "gateway.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    plot(summary, out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = summary["runs"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = ["direct_c1", "passthrough_c1", "gateway_c1"]
    x = range(len(names))
    left.bar([i - 0.2 for i in x], [runs[n]["p50_ms"] * 1000 for n in names], 0.4, label="p50")
    left.bar([i + 0.2 for i in x], [runs[n]["p99_ms"] * 1000 for n in names], 0.4, label="p99")
    left.set_xticks(list(x), ["mock direct", "bare pass-through", "through gatewayd"])
    left.set_ylabel("latency at 1 connection (µs)")
    left.set_title(f"added: p50 {summary['added_latency_p50_us']} µs, p99 {summary['added_latency_p99_us']} µs")
    left.legend()
    names = ["direct_c32", "passthrough_c32", "gateway_c32", "gateway_cache_hits_c32"]
    labels = ["mock direct", "bare pass-\nthrough", "gatewayd", "gatewayd\ncache hits"]
    right.bar(labels, [runs[n]["rps"] for n in names], color="#55a868")
    right.axhline(5000, color="crimson", linestyle="--", label="target 5,000 req/s")
    right.axhline(20000, color="orange", linestyle=":", label="target 20,000 req/s (hits)")
    right.set_ylabel("requests/s at 32 connections")
    right.set_title(f"one worker, RSS {summary['worker_rss_mb']} MB")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
