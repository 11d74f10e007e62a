"""Instructions per request of the in-process pipeline (bench/test_pipeline.py's cases),
counted by valgrind's callgrind: the same for the same code whatever else the machine is
doing, where CPU time on a shared 2-core VM swings by 2x from one minute to the next.

    python bench/instructions.py [--rounds 4] [--repeat 3] [--cases hit,bare-answer,...]

Each case runs in a process of its own under callgrind: warm-up rounds first, then
callgrind's counters are dumped and zeroed (callgrind_control), then `--rounds` rounds of
BATCH requests, then a second dump, which holds the measured requests and nothing else
(the mock runs in its own process, outside valgrind). Beside the total it gives what the
two calls into the Rust core cost inclusively (`Engine.admit`: parse, policy, routing,
cache lookup; `Engine.record` or `record_hit`: cache fill and audit append), so the
rest is the Python around them, the event loop and the upstream client.

Counts still move by about 1% from one process to the next (the event loop's timers, the
collector, hash seeds), so each case runs `--repeat` times, as many at once as there are
CPUs (an instruction count does not depend on what else runs), and the median is reported
with the spread beside it (`spread_per_request`: the largest count less the smallest).

The `upstream-essential` case is bench/essential.py's measuring rod: the same forwarded
request through only what no gatewayd request can skip. Upstream minus it is what the
pipeline's glue costs; it minus the bare relay is what the work itself costs.

Instructions are not time: valgrind's CPU has no SHA extensions, so the Rust core's SHA-256
runs its portable code here (several times the instructions of the SHA-NI path it takes on
a real x86 CPU), and a syscall counts only its user-space side. Compare cases and revisions
with it; quote times from bench/test_pipeline.py.

Writes bench/results/instructions.json and instructions.png.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CASES = ("hit", "bare-answer", "upstream", "upstream-essential", "bare-relay")
# The Rust calls whose inclusive cost is reported apart (callgrind's names for them).
# Each figure sums its calls' inclusive counts: a cache hit records through record_hit.
RUST_CALLS = {
    "admit": ("Engine::__pymethod_admit__",),
    "record": ("Engine::__pymethod_record__", "Engine::__pymethod_record_hit__"),
}


def inner(case: str, rounds: int) -> None:
    """Runs in the valgrind'ed process: warm up, dump, measure, dump."""
    sys.path.insert(0, str(HERE))
    import essential
    import test_pipeline as tp
    import uvloop

    from support.gateway import KEYS

    def dump() -> None:
        subprocess.run(["callgrind_control", "--dump", str(os.getpid())], check=True, capture_output=True)

    tp.PINNED = False  # a count does not depend on the CPU: unpinned, repeats run side by side
    loop = uvloop.new_event_loop()
    with tp.pinned_mock() as url, tempfile.TemporaryDirectory() as root:
        with tp.gateway_app(loop, url, Path(root)) as app, tp.upstream_client(loop) as client:
            body, concurrency = (tp.CACHED, 1) if case in ("hit", "bare-answer") else (tp.PLAIN, tp.CONCURRENCY)
            handler = {
                "hit": app,
                "upstream": app,
                "upstream-essential": essential.essential_upstream(app),
                "bare-answer": tp.bare_answer(tp.BARE_ANSWER),
                "bare-relay": tp.bare_relay(client, url + "/v1/chat/completions"),
            }[case]
            scope = tp.scope_for(body, KEYS["acme"])
            for _ in range(3):  # the first fills the cache; pools, memos and imports settle
                assert tp.serve(loop, handler, scope, body, concurrency) == 200
            dump()
            for _ in range(rounds):
                tp.serve(loop, handler, scope, body, concurrency)
            dump()
    loop.close()


def count(case: str, rounds: int) -> dict:
    """Runs `case` under callgrind; the measured dump's total and Rust calls, per request."""
    sys.path.insert(0, str(HERE))
    from test_pipeline import BATCH

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        argv = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--inner",
            case,
            "--rounds",
            str(rounds),
        ]
        started = time.monotonic()
        subprocess.run(argv, check=True, capture_output=True)
        dumps = sorted(Path(tmp).glob("callgrind.out.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
        if len(dumps) != 2:
            raise SystemExit(f"{case}: callgrind did not dump twice ({[p.name for p in dumps]})")
        measured = dumps[1]  # dumps[0] holds start-up and warm-up
        requests = rounds * BATCH
        total = _total(measured)
        annotated = subprocess.run(
            ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(measured)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        figures = {"instructions_per_request": round(total / requests)}
        for name, symbols in RUST_CALLS.items():
            figures[f"rust_{name}_per_request"] = round(sum(_inclusive(annotated, s) for s in symbols) / requests)
        figures["wall_s"] = round(time.monotonic() - started, 1)
        return figures


def median_run(runs: list[dict]) -> dict:
    """The run with the median count, and how far the runs' counts spread."""
    ordered = sorted(runs, key=lambda run: run["instructions_per_request"])
    counts = [run["instructions_per_request"] for run in ordered]
    return {**ordered[len(ordered) // 2], "spread_per_request": counts[-1] - counts[0], "runs": len(counts)}


def _total(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"{path}: no totals line")


def _inclusive(annotated: str, symbol: str) -> int:
    """The inclusive count of the function named `symbol` (its first line in the listing)."""
    for line in annotated.splitlines():
        match = re.match(r"\s*([\d,]+) ", line)
        if match and f":{symbol} [" in line:
            return int(match.group(1).replace(",", ""))
    return 0


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    admit = [results[n].get("rust_admit_per_request", 0) / 1000 for n in names]
    record = [results[n].get("rust_record_per_request", 0) / 1000 for n in names]
    rest = [results[n]["instructions_per_request"] / 1000 - a - r for n, a, r in zip(names, admit, record, strict=True)]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.barh(names, rest, label="Python, event loop, upstream client", color="#9db4d3")
    ax.barh(names, admit, left=rest, label="Rust: Engine.admit", color="#e07b39")
    lefts = [r + a for r, a in zip(rest, admit, strict=True)]
    ax.barh(names, record, left=lefts, label="Rust: Engine.record", color="#7a5195")
    for y, n in enumerate(names):
        ax.text(lefts[y] + record[y] + 3, y, f"{results[n]['instructions_per_request'] / 1000:.0f}k", va="center")
    ax.set_xlim(0, max(results[n]["instructions_per_request"] for n in names) / 1000 * 1.12)  # room for the labels
    ax.set_xlabel("thousand instructions per request (callgrind)")
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    title = "The in-process pipeline, instructions per request\n(under valgrind, SHA-256 runs without SHA-NI)"
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="processes per case; the median is reported")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args.inner, args.rounds)
        return 0
    cases = args.cases.split(",")
    for case in cases:
        if case not in CASES:
            parser.error(f"--cases: unknown case {case!r} (one of {', '.join(CASES)})")
    each = f"{args.repeat} x {args.rounds} rounds each"
    print(f"[instructions] {', '.join(cases)}: {each} under callgrind ...", flush=True)
    runs: dict[str, list[dict]] = {case: [] for case in cases}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        jobs = {pool.submit(count, case, args.rounds): case for case in cases for _ in range(args.repeat)}
        for job in as_completed(jobs):
            case = jobs[job]
            runs[case].append(job.result())
            print(f"[instructions] {case} ({len(runs[case])}/{args.repeat}): {runs[case][-1]}", flush=True)
    results = {case: median_run(runs[case]) for case in cases}
    for case, floor in (("hit", "bare-answer"), ("upstream", "bare-relay"), ("upstream-essential", "bare-relay")):
        if case in results and floor in results:
            ratio = results[case]["instructions_per_request"] / results[floor]["instructions_per_request"]
            print(f"{case} / {floor}: x{ratio:.2f}")
    RESULTS.mkdir(exist_ok=True)
    what = {"how": __doc__, "rounds": args.rounds, "repeat": args.repeat, "cases": results}
    (RESULTS / "instructions.json").write_text(json.dumps(what, indent=1) + "\n")
    plot(results, RESULTS / "instructions.png")
    print(f"wrote {RESULTS / 'instructions.json'} and instructions.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
