"""Did a change make the request pipeline cost more? `bench/test_pipeline.py` of two git
revisions, built and run alternately on this machine, so both see the same noise.

    python bench/compare_revisions.py BASE [HEAD] [--rounds 5]

Each revision is checked out in a temporary worktree with its own Rust extension built
(release), then the revisions' pipeline benches run in turn, `--rounds` times each. The
report is the median over rounds of each case's CPU time per request and wall time per
request, per revision, and HEAD's ratio to BASE; written to
bench/results/compare-<base>-<head>.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
FIGURES = ("cpu_us_per_request", "us_per_request_median")
BENCH = "bench/test_pipeline.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("head", nargs="?", default="HEAD")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--same-bench",
        action="store_true",
        help="run HEAD's bench/test_pipeline.py on both trees (its cases BASE can run), so a change to the "
        "bench itself between the revisions does not pass for a change in cost",
    )
    args = parser.parse_args()
    revs = {name: _resolve(rev) for name, rev in (("base", args.base), ("head", args.head))}
    work = Path(tempfile.mkdtemp(prefix="gatewayd-compare-"))
    try:
        trees = {name: _prepare(sha, work / name) for name, sha in revs.items()}
        if args.same_bench:
            shutil.copy(trees["head"] / BENCH, trees["base"] / BENCH)
        runs: dict[str, list[dict]] = {name: [] for name in trees}
        for n in range(args.rounds):
            for name, tree in trees.items():
                print(f"round {n + 1}/{args.rounds}: {name} ({revs[name][:10]})", flush=True)
                runs[name].append(_bench(tree, work / f"{name}-{n}.json"))
    finally:
        for name in ("base", "head"):
            subprocess.run(["git", "worktree", "remove", "--force", str(work / name)], cwd=ROOT, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    report = _report(revs, runs)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"compare-{revs['base'][:10]}-{revs['head'][:10]}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    _picture(report, stem.with_suffix(".png"))
    _print(report)
    print(f"written: {stem}.json, {stem}.png")
    return 0


def _resolve(rev: str) -> str:
    done = subprocess.run(["git", "rev-parse", rev], cwd=ROOT, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def _prepare(sha: str, tree: Path) -> Path:
    """A worktree at `sha` with its extension built into it."""
    print(f"building {sha[:10]} in {tree}", flush=True)
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), sha], cwd=ROOT, check=True, capture_output=True)
    target = Path(tempfile.gettempdir()) / f"gatewayd-compare-target-{sha[:12]}"
    env = {**os.environ, "CARGO_TARGET_DIR": str(target)}
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "gatewayd-py"], cwd=tree, env=env, check=True)
    shutil.copy(target / "release" / "lib_core.so", tree / "python" / "gatewayd" / "_core.abi3.so")
    return tree


def _bench(tree: Path, out: Path) -> dict[str, dict[str, float]]:
    """One run of the tree's pipeline bench: case name -> its figures."""
    env = {**os.environ, "PYTHONPATH": str(tree / "python")}
    argv = [sys.executable, "-m", "pytest", "-q", BENCH, "-p", "no:cacheprovider", "-k", "not canary"]
    argv += ["--benchmark-enable", "--benchmark-only", "--benchmark-min-rounds=30", f"--benchmark-json={out}"]
    subprocess.run(argv, cwd=tree, env=env, check=True, capture_output=True)
    data = json.loads(out.read_text())
    return {b["name"]: {f: b["extra_info"][f] for f in FIGURES} for b in data["benchmarks"]}


def _report(revs: dict[str, str], runs: dict[str, list[dict]]) -> dict:
    cases = sorted(set(runs["base"][0]) & set(runs["head"][0]))
    out: dict = {"base": revs["base"], "head": revs["head"], "rounds": len(runs["base"]), "cases": {}}
    for case in cases:
        row = {}
        for figure in FIGURES:
            base = statistics.median(r[case][figure] for r in runs["base"])
            head = statistics.median(r[case][figure] for r in runs["head"])
            row[figure] = {"base": base, "head": head, "ratio": round(head / base, 3)}
        out["cases"][case] = row
    return out


def _print(report: dict) -> None:
    print(f"{'case':<52} {'figure':<22} {'base':>8} {'head':>8} {'head/base':>9}")
    for case, row in report["cases"].items():
        for figure, v in row.items():
            print(f"{case:<52} {figure:<22} {v['base']:>8.2f} {v['head']:>8.2f} {v['ratio']:>9.3f}")


def _picture(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(report["cases"])
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(cases) + 1.5))
    ys = range(len(cases))
    base = [report["cases"][c]["cpu_us_per_request"]["base"] for c in cases]
    head = [report["cases"][c]["cpu_us_per_request"]["head"] for c in cases]
    ax.barh([y + 0.2 for y in ys], base, 0.4, label=f"base {report['base'][:10]}", color="#9ecae1")
    ax.barh([y - 0.2 for y in ys], head, 0.4, label=f"head {report['head'][:10]}", color="#3182bd")
    for y, (b, h) in enumerate(zip(base, head, strict=True)):
        ax.text(max(b, h), y, f"  x{h / b:.2f}", va="center", fontsize=8)
    ax.set_yticks(list(ys), [c.removeprefix("test_") for c in cases], fontsize=8)
    ax.set_xlabel(f"CPU µs per request (median of {report['rounds']} alternating rounds)")
    ax.set_title("bench/test_pipeline.py: base against head, same machine, same run")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
