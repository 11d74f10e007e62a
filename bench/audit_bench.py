"""What the audit trail costs. Three layers, each measured where it happens:

* **writer** (Rust, rust/core/examples/audit_bench.rs, release build): hashing and framing
  per record, the whole append, verification throughput, fsync'd appends one at a time;
  CPU figures are per-thread CPU time, so a busy shared box does not inflate them;
* **engine** (Python, the replica's real Engine and AuditSync): durable appends per second
  with group commit as concurrent requests, against `always`;
* **gateway** (wrk against `gatewayd serve`, one worker, and the mock provider): requests
  per second and latency under each fsync policy, switched by activating a config version.

    PYTHONPATH=python .venv/bin/python bench/audit_bench.py [--duration 10] [--records 1000000]

Pinning (2-core box): gateway on CPU 1; mock and wrk on CPU 0.
Results: bench/results/audit.json and bench/results/audit.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))  # reuse the test process helpers

from gatewayd import _core  # noqa: E402
from gatewayd.audit.sync import AuditSync  # noqa: E402
from support.gateway import KEYS, PROVIDER_KEY, Gateway, wait_ready  # noqa: E402
from support.procs import free_port, start_process, stop_process  # noqa: E402

POLICIES = ("never", "interval", "group", "always")
GATEWAY_CPU, LOAD_CPU = "1", "0"
RECORD = {
    "kind": "request",
    "tenant": "acme",
    "api": "chat",
    "model": "gpt-4o-mini",
    "decision": "allow",
    "rules": ["redact-emails"],
    "policy_version": 12,
    "routing_version": 4,
    "config_version": 7,
    "upstream": "openai",
    "status": 200,
    "cache": "miss",
    "prompt_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "response_sha256": "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752",
}
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"model":"mock-gpt","messages":[{"role":"user","content":"hello there"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p90_us":%%d,' ..
    '"p99_us":%%d,"errors":%%d,"non_2xx":%%d}\\n', summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def writer_level(records: int) -> dict:
    subprocess.run(
        ["cargo", "build", "-q", "--release", "-p", "gatewayd-core", "--example", "audit_bench"], cwd=REPO, check=True
    )
    with tempfile.TemporaryDirectory(dir="/dev/shm") as mem, tempfile.TemporaryDirectory(dir=REPO / "target") as disk:
        out = subprocess.run(
            [str(REPO / "target/release/examples/audit_bench"), mem, disk, str(records)],
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(out.stdout)


async def _durable_requests(engine, sync: AuditSync, concurrency: int, duration: float) -> dict:
    """`concurrency` request loops, each: append its record, wait until it is durable."""
    payload = json.dumps(RECORD).encode()
    waits: list[float] = []
    synced_values: set[int] = set()
    deadline = time.perf_counter() + duration

    async def loop() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            seq = engine.event(payload)
            await sync.durable(seq)
            waits.append(time.perf_counter() - started)
            synced_values.add(engine.audit_sync_state()[3])

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "durable_appends_per_s": len(waits) / elapsed,
        "fsyncs_per_s": len(synced_values) / elapsed,
        "records_per_fsync": len(waits) / max(1, len(synced_values)),
        "p50_us": statistics.median(waits) * 1e6,
        "p99_us": statistics.quantiles(waits, n=100)[98] * 1e6,
    }


def engine_level(duration: float) -> list[dict]:
    rows = []
    for policy, concurrency in [("always", 1), ("always", 64)] + [("group", c) for c in (1, 8, 64, 256)]:
        with tempfile.TemporaryDirectory(dir=REPO / "target") as root:
            engine = _core.Engine(16, 1 << 20, root, "bench", 64 << 20)
            engine.set_audit_sync(policy, 0)
            row = asyncio.run(_durable_requests(engine, AuditSync(engine), concurrency, duration))
            rows.append({"policy": policy, **row})
            del engine
        rate = rows[-1]["durable_appends_per_s"]
        print(f"  engine {policy:>6} c={concurrency:<3} {rate:>8.0f} durable appends/s", flush=True)
    return rows


def _wrk(url: str, connections: int, duration: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % {"key": KEYS["acme"]})
    try:
        argv = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "-s", script.name, url]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script.name)
    stats = json.loads(re.search(r"WRK_JSON (\{.*\})", out).group(1))
    stats["rps"] = stats["requests"] / (stats["duration_us"] / 1e6)
    return stats


def gateway_level(duration: int) -> list[dict]:
    root = Path(tempfile.mkdtemp(dir=REPO / "target", prefix="audit-bench-"))
    mock_port = free_port()
    mock_url = f"http://127.0.0.1:{mock_port}"
    env = {"PYTHONPATH": str(REPO / "python")}
    mock_argv = [sys.executable, "-m", "gatewayd.mock", "--port", str(mock_port), "--require-key", PROVIDER_KEY]
    mock = start_process(["taskset", "-c", LOAD_CPU, *mock_argv], f"{mock_url}/_mock/health", env=env)
    gw = Gateway(root, mock_port, free_port(), workers=1)
    gw.proc = start_process(["taskset", "-c", GATEWAY_CPU, *gw.cli_argv("serve")], gw.url + "/healthz", timeout=60)
    rows = []
    try:
        wait_ready(gw.url + "/readyz")
        url = gw.url + "/v1/chat/completions"
        for policy in POLICIES:
            doc = root / f"runtime-{policy}.yaml"
            audit = f"audit: {{fsync: {policy}, fsync_interval_ms: 200}}"
            doc.write_text(f"upstream_timeout_s: 30\ncache: {{enabled: false}}\n{audit}\n")
            pushed = gw.cli("push", "config", str(doc), "--reason", f"bench {policy}").stdout
            version = re.search(r"version (\d+)", pushed).group(1)
            gw.cli("activate", "config", version, "--reason", f"bench {policy}")
            _wrk(url, 32, 2)  # warm up
            for connections in (1, 32):
                stats = _wrk(url, connections, duration)
                rows.append({"policy": policy, "connections": connections, **stats})
                print(
                    f"  gateway {policy:>8} c={connections:<2} {stats['rps']:>7.0f} rps  "
                    f"p50 {stats['p50_us'] / 1000:.2f} ms  p99 {stats['p99_us'] / 1000:.2f} ms",
                    flush=True,
                )
    finally:
        stop_process(gw.proc)
        stop_process(mock)
        shutil.rmtree(root, ignore_errors=True)
    return rows


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = results["writer"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax = axes[0]
    parts = [
        ("hash + frame", w["hash_and_frame_cpu_ns"] / 1000),
        ("+ JSON\nencoding", w["encode_hash_frame_cpu_ns"] / 1000),
        ("+ write(2)\n(tmpfs)", w["append_cpu_ns"] / 1000),
        ("verify", 1e6 / w["verify_records_per_cpu_s"]),
    ]
    ax.bar([p for p, _ in parts], [v for _, v in parts], color=["#4c72b0", "#55a868", "#c44e52", "#8172b2"])
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="1 µs (targets: hash+frame; 1M/s verify)")
    ax.set_ylabel("µs of CPU per record")
    ax.set_title("Writer (Rust), per record")
    ax.legend(loc="upper left")

    ax = axes[1]
    engine = results["engine"]
    labels = [f"{r['policy']}\nc={r['concurrency']}" for r in engine]
    colours = ["#c44e52" if r["policy"] == "always" else "#55a868" for r in engine]
    ax.bar(labels, [r["durable_appends_per_s"] for r in engine], color=colours)
    ax.set_ylabel("durable appends / s")
    ax.set_title("Durable appends/s by concurrent requests (engine)")

    ax = axes[2]
    rows = [r for r in results["gateway"] if r["connections"] == 32]
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["p50_us"] / 1000 for r in rows], width=0.4, label="p50")
    ax.bar([i + 0.2 for i in x], [r["p99_us"] / 1000 for r in rows], width=0.4, label="p99")
    ax.set_xticks(list(x), [f"{r['policy']}\n{r['rps']:.0f} rps" for r in rows])
    ax.set_ylabel("request latency, ms (wrk -c32)")
    ax.set_title("Gateway latency by fsync policy")
    ax.legend()
    load = results["machine"]["load_avg_at_start"][0]
    cpus = results["machine"]["cpus"]
    fig.suptitle(f"gatewayd audit trail ({cpus} CPUs, shared: load {load:.1f} at start)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--records", type=int, default=1_000_000, help="records for the writer-level run")
    args = parser.parse_args()
    load = os.getloadavg()  # the box is shared: say how busy it was
    print("writer (Rust)...", flush=True)
    writer = writer_level(args.records)
    print(json.dumps(writer, indent=2), flush=True)
    print("engine (group commit)...", flush=True)
    engine = engine_level(min(5.0, args.duration))
    print("gateway (wrk)...", flush=True)
    gateway = gateway_level(args.duration)
    results = {
        "how": __doc__.split("\n\n")[1].strip(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_at_start": load},
        "writer": writer,
        "engine": engine,
        "gateway": gateway,
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "audit.json").write_text(json.dumps(results, indent=2) + "\n")
    chart(results, out / "audit.png")
    print(f"wrote {out / 'audit.json'} and {out / 'audit.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
