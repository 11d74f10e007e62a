"""The canary drill under saturating load (docs/ROLLBACK.md R13; issue 11's measurements).

Four replicas (`gatewayd serve --workers 4`) share a real redis-server; wrk saturates them
with requests of random end users, so a canary splits them. Two parts:

1. Automatic revert. A routing candidate at 25 % sends its share to a second mock
   provider, with the rule `error_rate > 0.05` over a 10 s window. Once the candidate has
   served for a while, the drill kills that provider (an injected error rate: every
   candidate request now fails) and measures: injection -> the `auto` change (detection),
   and injection -> the last replica's acknowledgement of it. Then it restarts the
   provider, resumes the canary, and repeats.
2. Rollback of a canary. With the candidate at 25 % and healthy, `rollback routing` drops
   it; from the audit chains: the command -> the start of the last request served from the
   candidate position, and how many such requests started after their replica had
   acknowledged the rollback (target: none).

    python bench/canary_drill.py [--rounds 3] [--replicas 4]

Writes bench/results/canary_drill.json and canary_drill.png.
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

from cluster import Cluster  # noqa: E402

from gatewayd import _core  # noqa: E402
from gatewayd.control import auto_revert, positions  # noqa: E402
from gatewayd.control.barrier import wait_for_acks  # noqa: E402
from gatewayd.control.registry import Registry  # noqa: E402
from support.gateway import KEYS, ROUTING  # noqa: E402
from support.mock import start_mock  # noqa: E402
from support.procs import free_port, stop_process  # noqa: E402

PROVIDER_B = """
[providers.b]
kind = "openai"
base_url = "http://127.0.0.1:{port}/v1"
api_key = "provider-secret"
"""
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer %s"
request = function()
  local body = '{"model":"mock-gpt","user":"u' .. math.random(1, 1000000) ..
    '","messages":[{"role":"user","content":"drill traffic"}]}'
  return wrk.format(nil, nil, nil, body)
end
"""
RULE = "error_rate > 0.05"
WINDOW_S = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="canary-drill-"))
    b_port = free_port()
    b_proc = start_mock("--require-key", "provider-secret", port=b_port)[1]
    cluster = Cluster(root, args.replicas, PROVIDER_B.format(port=b_port))
    gw, registry = cluster.gw, cluster.registry
    to_b = ROUTING.replace("provider: mock}", "provider: b}", 1).encode()
    candidate = registry.push("routing", to_b, "routing-b.yaml", "drill", "provider B as a candidate").id

    script = root / "load.lua"
    script.write_text(WRK_SCRIPT % KEYS["acme"])
    duration = args.rounds * (WINDOW_S + 25) + 40
    wrk = subprocess.Popen(
        ["wrk", "-t2", f"-c{args.connections}", f"-d{duration}s", "-s", str(script), gw.url + "/v1/chat/completions"],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(2)
    reverts, rollback = [], {}
    try:
        change = positions.canary(registry, "routing", "default", candidate, 25, "drill", "canary B", _rules)
        assert wait_for_acks(registry, change, 10).ok
        for n in range(args.rounds):
            time.sleep(WINDOW_S + 2)  # the candidate serves, healthy, for a whole window
            injected = time.time()
            stop_process(b_proc)  # every candidate request now fails: 502 unreachable
            auto = _await_auto(registry, after=change.id, timeout=60)
            report = wait_for_acks(registry, auto, 10)
            assert report.ok, report.render()
            last_ack = max(a.at for a in report.acks)
            reverts.append(
                {
                    "injected": injected,
                    "auto_change": auto.id,
                    "auto_at": auto.at,
                    "reason": auto.reason,
                    "detect_ms": (auto.at - injected) * 1000,
                    "to_last_ack_ms": (last_ack - injected) * 1000,
                    "acks": {a.replica: a.at for a in report.acks},
                }
            )
            print(
                f"revert {n + 1}/{args.rounds}: detected after {reverts[-1]['detect_ms']:.0f} ms, "
                f"last ack after {reverts[-1]['to_last_ack_ms']:.0f} ms",
                flush=True,
            )
            b_proc = start_mock("--require-key", "provider-secret", port=b_port)[1]
            change = positions.canary(registry, "routing", "default", None, 25, "drill", f"resume {n + 1}")
            assert wait_for_acks(registry, change, 10).ok

        time.sleep(5)
        issued = time.time()
        dropped = registry.rollback("routing", "drill", "drop the candidate")
        report = wait_for_acks(registry, dropped, 10)
        assert report.ok, report.render()
        rollback = {"issued": issued, "flipped": dropped.at, "acks": {a.replica: a.at for a in report.acks}}
        time.sleep(2)
    finally:
        if wrk.poll() is None:
            wrk.terminate()
        wrk_out = wrk.communicate()[0]
        cluster.stop()
        stop_process(b_proc)

    served = _candidate_requests(gw.audit_dir, candidate)
    late = [r for r in served if r["started"] > rollback["acks"].get(r["chain"], float("inf"))]
    last = max((r["started"] for r in served), default=rollback["issued"])
    result = {
        "how": f"gatewayd serve --workers {args.replicas} + redis-server + two mocks on one 2-core host; "
        f"wrk -t2 -c{args.connections}, random end users; candidate at 25 %, rule '{RULE}' over {WINDOW_S} s",
        "auto_revert": {
            "rounds": len(reverts),
            "injection_to_auto_change_ms": _summary([r["detect_ms"] for r in reverts]),
            "injection_to_last_ack_ms": _summary([r["to_last_ack_ms"] for r in reverts]),
            "samples": reverts,
        },
        "rollback": {
            "to_last_ack_ms": (max(rollback["acks"].values()) - rollback["issued"]) * 1000,
            "to_last_candidate_request_started_ms": (last - rollback["issued"]) * 1000,
            "candidate_requests_started_after_their_replica_acked": len(late),
            "candidate_requests_in_the_chains": len(served),
        },
        "wrk": wrk_out,
    }
    out = HERE / "results" / "canary_drill.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    _plot(reverts, rollback, served, candidate, out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in result.items() if k != "wrk"}, indent=2, default=str)[:3000])


def _rules(candidate):
    return auto_revert.with_rules("routing", candidate, [RULE], 50, WINDOW_S, False)


def _await_auto(registry: Registry, after: int, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for change in registry.history("routing"):
            if change.id > after and change.actor == "auto":
                return change
        time.sleep(0.05)
    raise RuntimeError("no automatic revert within the timeout")


def _candidate_requests(audit_dir: Path, candidate: int) -> list[dict]:
    out = []
    for chain in _core.list_chains(str(audit_dir)):
        for payload in _core.AuditReader(str(audit_dir), chain):
            record = json.loads(payload)
            if record.get("kind") != "request" or record.get("routing_version") != candidate:
                continue
            if record.get("position", {}).get("routing") != "candidate":
                continue
            ended = dt.datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).timestamp()
            out.append({"chain": chain, "started": ended - record["latency_us"] / 1e6, "status": record["status"]})
    return out


def _summary(values: list[float]) -> dict:
    if not values:
        return {}
    return {"median": statistics.median(values), "max": max(values), "min": min(values)}


def _plot(reverts: list[dict], rollback: dict, served: list[dict], candidate: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    xs = range(1, len(reverts) + 1)
    left.bar([x - 0.2 for x in xs], [r["detect_ms"] for r in reverts], 0.4, label="injection → auto change")
    left.bar([x + 0.2 for x in xs], [r["to_last_ack_ms"] for r in reverts], 0.4, label="injection → last ack")
    left.set_xlabel("injected failure #")
    left.set_ylabel("ms")
    left.set_title(f"Automatic revert of a failing candidate ('{RULE}', {WINDOW_S} s window)")
    left.legend(fontsize=8)
    issued = rollback["issued"]
    starts = [(r["started"] - issued) * 1000 for r in served if -3 <= r["started"] - issued <= 2]
    right.hist(starts, bins=50, color="#4c72b0", label=f"requests served by candidate v{candidate}")
    for at in rollback["acks"].values():
        right.axvline((at - issued) * 1000, color="crimson", alpha=0.5, linewidth=1)
    right.axvline(0, color="black", linestyle="--", label="rollback command")
    right.set_xlabel("request start relative to `rollback routing` (ms); red: replica acknowledgements")
    right.set_title("The candidate's last requests around the rollback")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
