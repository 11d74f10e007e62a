"""The rollback drill under saturating load (docs/ROLLBACK.md "The drill", step 1; issue 3).

Four replicas (`gatewayd serve --workers 4`) share a real redis-server; wrk saturates
them; the drill activates a bad policy and rolls it back N times. For every rollback it
measures the time from the command to the last replica's acknowledgement, and then checks
the audit chains: did any request start under the reverted version after its replica had
acknowledged the rollback? (Target: none.)

    python bench/rollback_drill.py [--flips 20] [--replicas 4]

Writes bench/results/rollback_drill.json and a timeline picture rollback_drill.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cluster import Cluster, percentile  # noqa: E402

from gatewayd import _core  # noqa: E402
from gatewayd.control.barrier import wait_for_acks  # noqa: E402
from support.gateway import KEYS  # noqa: E402

BAD_POLICY = b"default: allow\nrules:\n  - {id: overblocking, when: {prompt: {keywords: [invoice]}}, action: deny}\n"
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"model":"mock-gpt","messages":[{"role":"user","content":"drill traffic"}]}'
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer %s"
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flips", type=int, default=20)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="drill-"))
    cluster = Cluster(root, args.replicas)
    gw, registry = cluster.gw, cluster.registry
    bad = registry.push("policy", BAD_POLICY, "policy-bad.yaml", "drill", "the change the drill reverts").id

    script = root / "load.lua"
    script.write_text(WRK_SCRIPT % KEYS["acme"])
    duration = int(args.flips * 1.2 + 10)
    wrk = subprocess.Popen(
        [
            "wrk",
            "-t2",
            f"-c{args.connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(script),
            gw.url + "/v1/chat/completions",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(2)  # let the load saturate first
    flips = []
    try:
        for i in range(args.flips):
            activated = registry.activate("policy", bad, "drill", f"drill {i}: activate")
            report = wait_for_acks(registry, activated, 10)
            assert report.ok, report.render()
            time.sleep(0.3)  # traffic runs under the bad version
            issued = time.time()
            change = registry.rollback("policy", "drill", f"drill {i}: revert")
            report = wait_for_acks(registry, change, 10)
            done = time.time()
            assert report.ok, report.render()
            acks = {a.replica: a.at for a in report.acks}
            flips.append(
                {
                    "change": change.id,
                    "activated": activated.at,
                    "issued": issued,
                    "flipped": change.at,
                    "acks": acks,
                    "to_last_ack_ms": (max(acks.values()) - change.at) * 1000,
                    "command_ms": (done - issued) * 1000,
                }
            )
            print(f"flip {i + 1}/{args.flips}: last ack after {flips[-1]['to_last_ack_ms']:.1f} ms", flush=True)
            time.sleep(0.3)
    finally:
        wrk_out = wrk.communicate()[0]
        cluster.stop()

    late = _late_requests(gw.audit_dir, flips, bad)
    to_ack = sorted(f["to_last_ack_ms"] for f in flips)
    result = {
        "how": f"gatewayd serve --workers {args.replicas} + redis-server + mock on one 2-core host; "
        f"wrk -t2 -c{args.connections}; {args.flips} activate/rollback cycles",
        "flips": len(flips),
        "rollback_to_last_ack_ms": {
            "p50": statistics.median(to_ack),
            "p99": percentile(to_ack, 99),
            "max": to_ack[-1],
        },
        "command_ms_p50": statistics.median(f["command_ms"] for f in flips),
        "requests_started_under_reverted_version_after_ack": late,
        "wrk": wrk_out,
        "samples": flips,
    }
    out = HERE / "results" / "rollback_drill.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    _plot(flips, late, out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in result.items() if k not in ("samples", "wrk")}, indent=2))
    print(wrk_out)


def _late_requests(audit_dir: Path, flips: list[dict], bad: int) -> int:
    """Requests served under `bad` that started after their replica acknowledged a revert
    away from it, and before the next activation of it."""
    windows = []  # (replica, acked_at, next_activation)
    for i, f in enumerate(flips):
        until = flips[i + 1]["activated"] if i + 1 < len(flips) else float("inf")
        windows.extend((replica, at, until) for replica, at in f["acks"].items())
    late = 0
    for chain in _core.list_chains(str(audit_dir)):
        for payload in _core.AuditReader(str(audit_dir), chain):
            record = json.loads(payload)
            if record.get("kind") != "request" or record.get("policy_version") != bad:
                continue
            ended = dt.datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).timestamp()
            started = ended - record["latency_us"] / 1e6
            if any(chain == r and acked < started < until for r, acked, until in windows):
                late += 1
    return late


def _plot(flips: list[dict], late: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    replicas = sorted({r for f in flips for r in f["acks"]})
    for n, replica in enumerate(replicas):
        xs = [i + 1 for i in range(len(flips))]
        ys = [(f["acks"][replica] - f["flipped"]) * 1000 for f in flips]
        left.scatter(xs, ys, s=14, label=replica, marker="os^dv"[n % 5])
    left.set_xlabel("rollback #")
    left.set_ylabel("flip → acknowledgement (ms)")
    left.set_title("Every replica's acknowledgement of each rollback")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    values = sorted(f["to_last_ack_ms"] for f in flips)
    right.hist(values, bins=15, color="#4c72b0")
    right.axvline(500, color="crimson", linestyle="--", label="target p99 500 ms")
    right.set_xlabel("rollback → last acknowledgement (ms)")
    right.set_ylabel("rollbacks")
    right.set_title(
        f"p50 {statistics.median(values):.1f} ms, p99 {percentile(values, 99):.1f} ms; late requests: {late}"
    )
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
