"""A locust rollback drill against a running gateway, with a timeline picture.

Runs locust headless (loadtests/locustfile.py) while it pushes a policy, activates it,
lets traffic use it, and rolls it back with `gatewayd` (the same commands an SRE types).
Then it draws which policy version served the traffic, second by second, with the
commands and their acknowledgements marked, and checks that no request started after
the rollback was acknowledged was served by the reverted version.

    python loadtests/drill.py --config examples/gatewayd.toml --host http://127.0.0.1:8080 \
        [--users 32] [--policy loadtests/policy-drill.yaml]

Writes drill-timeline.png and drill.json in --out (default: the current directory).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
DRILL_POLICY = HERE / "policy-drill.yaml"


def gatewayd(config: str, *args: str) -> tuple[float, float, str]:
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "gatewayd.cli", "--config", config, *args], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"gatewayd {' '.join(args)} failed ({done.returncode}): {done.stderr or done.stdout}")
    return started, time.time(), done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--policy", default=str(DRILL_POLICY))
    parser.add_argument("--key", default="gw-demo-key")
    parser.add_argument("--out", default=".")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "drill-versions.csv"

    _, _, pushed = gatewayd(args.config, "push", "policy", args.policy, "--reason", "drill candidate")
    version = pushed.split(" version ")[1].split()[0]
    locust = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(HERE / "locustfile.py"),
            "--host",
            args.host,
            "--headless",
            "-u",
            str(args.users),
            "-r",
            str(args.users),
            "-t",
            "14s",
            "--only-summary",
        ],
        env={**os.environ, "GATEWAYD_KEY": args.key, "GATEWAYD_VERSIONS_CSV": str(csv_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    marks = []
    time.sleep(4)
    print(f"activating policy {version} under load ...", flush=True)
    marks.append(("activate", *gatewayd(args.config, "activate", "policy", version, "--reason", "drill: activate")))
    time.sleep(4)
    print("rolling back ...", flush=True)
    marks.append(("rollback", *gatewayd(args.config, "rollback", "policy", "--reason", "drill: revert")))
    locust.wait(timeout=60)

    rows = list(csv.DictReader(csv_path.open()))
    rollback_acked = marks[1][2]
    late = sum(1 for r in rows if float(r["started"]) > rollback_acked and r["policy_version"] == version)
    failures = sum(1 for r in rows if r["status"] != "200")
    report = {
        "requests": len(rows),
        "failures": failures,
        "reverted_version": int(version),
        "served_by_reverted_version_after_rollback_returned": late,
        "commands": [
            {"command": name, "issued": start, "returned": end, "seconds": round(end - start, 3), "output": text}
            for name, start, end, text in marks
        ],
    }
    (out / "drill.json").write_text(json.dumps(report, indent=2))
    _timeline(rows, marks, version, out / "drill-timeline.png")
    print(json.dumps({k: v for k, v in report.items() if k != "commands"}, indent=2))
    for name, start, end, text in marks:
        print(f"{name}: {end - start:.3f} s\n{text}")
    if late or failures:
        raise SystemExit(1)


def _timeline(rows: list[dict], marks: list, version: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = min(float(r["started"]) for r in rows)
    buckets: dict[int, Counter] = defaultdict(Counter)
    for r in rows:
        buckets[int((float(r["started"]) - t0) * 10)][r["policy_version"]] += 1  # 100 ms bins
    versions = sorted({v for c in buckets.values() for v in c}, key=lambda v: (v != version, v))
    xs = sorted(buckets)
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.stackplot(
        [x / 10 for x in xs],
        [[buckets[x][v] * 10 for x in xs] for v in versions],
        labels=[f"policy v{v}" + (" (reverted)" if v == version else "") for v in versions],
        alpha=0.85,
    )
    for name, start, end, text in marks:
        ax.axvline(start - t0, color="black", linestyle="--", linewidth=1)
        ax.axvline(end - t0, color="crimson", linewidth=1.2)
        ax.text(start - t0, ax.get_ylim()[1] * 0.95, f" {name} issued", fontsize=8)
        acked = re.search(r"last acknowledgement after ([\d.]+ ms)", text)
        label = f" command returned after {(end - start) * 1000:.0f} ms"
        ax.text(end - t0, ax.get_ylim()[1] * 0.85, label, fontsize=8, color="crimson")
        if acked:
            ax.text(
                end - t0, ax.get_ylim()[1] * 0.77, f" (flip to last ack: {acked.group(1)})", fontsize=8, color="crimson"
            )
    ax.set_xlabel("seconds")
    ax.set_ylabel("requests/s by serving version")
    ax.set_title("Rollback drill: which policy version served the traffic")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
