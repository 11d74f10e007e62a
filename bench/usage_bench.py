"""`gatewayd usage` over a million request records: how long the report takes, against
reading the same chains through the verifying reader alone (the floor: every link checked,
nothing decoded), in one run.

    python bench/usage_bench.py [--records 1000000] [--chains 2]

The records are written by the Rust audit writer (Engine.event) with the fields a request
record has (tenant, key, model, upstream, tokens, cost, ...), spread over a few tenants,
keys and models, a tenth of them cache hits. Results: bench/results/usage.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import msgspec

HERE = Path(__file__).resolve().parent
ROUNDS = 3
sys.path.insert(0, str(HERE.parent / "python"))

from gatewayd import _core  # noqa: E402
from gatewayd.cli.usage import usage_report  # noqa: E402


def record(i: int) -> bytes:
    hit = i % 10 == 0
    prompt, completion = 20 + i % 50, 100 + i % 200
    cost = round((prompt * 2.5 + completion * 10) / 1e6, 12)
    fields = {
        "kind": "request",
        "request_id": f"{i:032x}",
        "tenant": f"tenant-{i % 7}",
        "key": f"key-{i % 31}",
        "api": "chat",
        "model": f"gpt-4o-{i % 3}",
        "upstream": "openai",
        "upstream_model": f"gpt-4o-{i % 3}",
        "decision": "allow",
        "status": 200,
        "cache": "hit" if hit else "miss",
        "policy_version": 3,
        "routing_version": 2,
        "config_version": 5,
        "prompt_sha256": "ab" * 32,
        "response_sha256": "cd" * 32,
        "latency_us": 812,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": 0,
        "cost": 0.0 if hit else cost,
        "currency": "USD",
        "price_version": 5,
    }
    if hit:
        fields["saved_cost"] = cost
    return msgspec.json.encode(fields)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--chains", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="usage-bench-") as root:
        started = time.perf_counter()
        per_chain = args.records // args.chains
        for c in range(args.chains):
            engine = _core.Engine(16, 1 << 20, root, f"bench-w{c}", 64 << 20)
            for i in range(c * per_chain, (c + 1) * per_chain):
                engine.event(record(i))
            engine.sync_audit()
            del engine
        written = time.perf_counter() - started
        total = per_chain * args.chains

        # Alternated, the best of each kept: the first pass over the files warms the page cache.
        reading = reporting = by_key = float("inf")
        for _ in range(ROUNDS):
            started = time.perf_counter()
            read = sum(1 for chain in _core.list_chains(root) for _ in _core.AuditReader(root, chain))
            reading = min(reading, time.perf_counter() - started)
            started = time.perf_counter()
            report = usage_report(root, "tenant", None, None)
            reporting = min(reporting, time.perf_counter() - started)
            started = time.perf_counter()
            usage_report(root, "key", None, None)
            by_key = min(by_key, time.perf_counter() - started)
    assert read >= total and report.totals[0]["requests"] == total
    result = {
        "records": total,
        "chains": args.chains,
        "write_s": round(written, 2),
        "read_verified_s": round(reading, 3),
        "usage_by_tenant_s": round(reporting, 3),
        "usage_by_key_s": round(by_key, 3),
        "usage_records_per_s": round(total / reporting),
        "usage_over_read_ratio": round(reporting / reading, 2),
        "totals": report.totals,
    }
    out = HERE / "results" / "usage.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "totals"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
