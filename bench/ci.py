"""The benchmark gate of CI (`make bench-ci`): a few minutes of benches, each figure a ratio
to a reference measured in the same run, compared with the committed baseline.

    python bench/ci.py                    # measure, write bench/results/ci.json and ci.png, gate
    python bench/ci.py --write-baseline   # measure, write bench/baseline.json instead of gating

What runs (about two minutes on the 2-core reference machine):
- bench/test_core.py: the Rust core through its Python API against plain-Python references
  (policy by rule count and prompt size, cache get and put, audit append and verify);
  ratio = our fastest round / the reference's;
- bench/test_pipeline.py, short: the in-process pipeline against a bare ASGI app doing the
  same I/O; ratio = our fastest round (least CPU for the upstream pair, which the mock
  paces) / the bare app's;
  both benches run in turn PASSES times, each side keeping its best pass;
- a short bench/gateway_bench.py run (one layout, GATEWAY_SECONDS per run, medians of
  GATEWAY_ROUNDS rounds): one gateway worker against the bare granian pass-through in
  front of the same mock; ratio = pass-through req/s / ours at 32 connections, our p50 /
  the pass-through's at 1 connection.
Every ratio is oriented so that bigger is worse. Absolute times differ from machine to
machine and from minute to minute on a shared one; a ratio of two figures taken in the same
run much less so. The gate fails (exit 1) when a ratio is more than FACTOR times its
baseline's, with a line naming the benchmark and both figures; a ratio without a baseline
entry is reported, not failed. The ratio gated is the median of the passes' own ratios
(each pass measures both sides back to back), in this run and in the baseline alike: one
pass disturbed on either side moves it not at all. (The best figure of each side, also
recorded, follows an outlier: one pass whose reference ran unusually fast once made an
unchanged audit append read 2x its baseline.)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
BASELINE = HERE / "baseline.json"
FACTOR = 2.0
PARTS = ("core", "pipeline", "gateway")

PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-enable", "--benchmark-only"]
# The core and pipeline benches run in turn PASSES times, and each side of a pair keeps its
# best pass: on a shared box a burst of someone else's work can slow one side of a pair and
# not the other, and it rarely lasts through every pass.
PASSES = 3
CORE_ARGS = ["bench/test_core.py", "--benchmark-disable-gc", "--benchmark-max-time=0.5", "--benchmark-min-rounds=5"]
# The traced cases (issue 17) are measured by `make bench`, not gated: CI skips them.
PIPELINE_ARGS = ["bench/test_pipeline.py", "-k", "not traced", "--benchmark-max-time=0.5", "--benchmark-min-rounds=15"]
PIPELINE_BATCH = 320  # test_pipeline.BATCH: requests per round


def _least_round(bench: dict) -> float:
    """The fastest round (pure CPU work: the least disturbed one), in µs."""
    return bench["stats"]["min"] * 1e6


def _least_round_per_request(bench: dict) -> float:
    return bench["stats"]["min"] / PIPELINE_BATCH * 1e6


def _least_cpu_per_request(bench: dict) -> float:
    return bench["extra_info"]["cpu_us_per_request_min"]


# name -> (our test, the reference's test, figure, unit, what it compares)
PIPELINE_PAIRS = {
    "pipeline/cache-hit": (
        "test_cache_hit_through_gatewayd",
        "test_cache_hit_floor_bare_asgi_answer",
        _least_round_per_request,
        "µs/request",
        "a cache hit through GatewayApp / a bare ASGI app sending the same answer (fastest round)",
    ),
    "pipeline/cache-hit-canary": (
        "test_cache_hit_through_gatewayd_during_a_canary",
        "test_cache_hit_floor_bare_asgi_answer",
        _least_round_per_request,
        "µs/request",
        "the same cache hit while a routing canary splits traffic / the bare answer (fastest round)",
    ),
    "pipeline/upstream-cpu": (
        "test_upstream_through_gatewayd",
        "test_upstream_floor_bare_relay",
        _least_cpu_per_request,
        "µs CPU/request",
        "CPU per request forwarding to the mock / a bare relay through the same UpstreamClient "
        "(the round that took the least CPU: the mock sets the wall-clock pace)",
    ),
    "pipeline/essential-cpu": (
        "test_upstream_essential_rod",
        "test_upstream_floor_bare_relay",
        _least_cpu_per_request,
        "µs CPU/request",
        "CPU per request of the measuring rod (only the work no forwarded request can skip: the "
        "Rust core's two calls around the upstream call) / the bare relay: the design's own cost",
    ),
}
GATEWAY_SECONDS, GATEWAY_ROUNDS, GATEWAY_LAYOUT = 3, 5, "dedicated"
GATEWAY_SCENARIOS = ("passthrough_c1", "gateway_c1", "passthrough_c32", "gateway_c32")

STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[bench-ci {time.monotonic() - STARTED:5.0f}s] {message}", flush=True)


def run_pytest(args: list[str], out: Path) -> dict[str, dict]:
    """Runs pytest-benchmark on `args`, its output shown only if it fails; returns its
    benchmarks by name, their raw data dropped."""
    argv = [*PYTEST, *args, f"--benchmark-json={out}"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stdout[-20000:], done.stderr[-5000:], sep="\n")
        raise SystemExit(f"bench-ci: pytest {' '.join(args)} failed (exit {done.returncode})")
    benchmarks = json.loads(out.read_text())["benchmarks"]
    for bench in benchmarks:
        bench["stats"].pop("data", None)
        bench.pop("options", None)
    return {bench["name"]: bench for bench in benchmarks}


# A pair: (our test, the reference's test, figure of a benchmark, unit, what it compares).
Pairs = dict[str, tuple[str, str, Callable[[dict], float], str, str]]


def core_pairs(benchmarks: dict[str, dict]) -> Pairs:
    """bench/test_core.py's cases, paired by their extra_info (pair, side)."""
    sides: dict[str, dict[str, str]] = {}
    for name, bench in benchmarks.items():  # in the order they ran
        sides.setdefault(bench["extra_info"]["pair"], {})[bench["extra_info"]["side"]] = name
    return {
        pair: (s["ours"], s["reference"], _least_round, "µs", f"{s['ours']} / {s['reference']} (fastest round)")
        for pair, s in sides.items()
    }


def ratios_of(pairs: Pairs, passes: list[dict[str, dict]]) -> dict[str, dict]:
    """Each side's best figure over the passes, and their ratio (ours / reference)."""
    out = {}
    for name, (ours_test, ref_test, figure, unit, what) in pairs.items():
        ours = [figure(p[ours_test]) for p in passes]
        ref = [figure(p[ref_test]) for p in passes]
        per_pass = [o / r for o, r in zip(ours, ref, strict=True)]
        out[name] = entry(min(ours), min(ref), min(ours) / min(ref), unit, what, per_pass)
    return out


def entry(ours: float, reference: float, ratio: float, unit: str, what: str, per_pass: list[float]) -> dict:
    return {
        "ours": _round(ours),
        "reference": _round(reference),
        "ratio": _round(ratio),
        "unit": unit,
        "what": what,
        "per_pass": [_round(r) for r in per_pass],  # each pass's (round's) own ratio: the spread
    }


def _round(value: float) -> float:
    return float(f"{value:.4g}")


def fmt(value: float) -> str:
    """4 significant digits, without an exponent."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def show(pairs: Pairs, bench: dict[str, dict]) -> None:
    for name, (ours_test, ref_test, figure, unit, _) in pairs.items():
        ours, ref = figure(bench[ours_test]), figure(bench[ref_test])
        print(
            f"    {name:<28} ours {fmt(ours):>9}  reference {fmt(ref):>9} {unit:<15} ratio {ours / ref:.4g}", flush=True
        )


def gateway_run() -> tuple[dict[str, dict], dict]:
    sys.path.insert(0, str(HERE))
    import gateway_bench

    scenarios = [s for s in gateway_bench.SCENARIOS if s[0] in GATEWAY_SCENARIOS]
    log(f"gateway vs bare pass-through: {GATEWAY_ROUNDS} rounds of {len(scenarios)} x {GATEWAY_SECONDS}s wrk runs")
    samples, rss = gateway_bench.measure(GATEWAY_SECONDS, [GATEWAY_LAYOUT], GATEWAY_ROUNDS, scenarios, warmup_s=2)
    runs = samples[GATEWAY_LAYOUT]
    median = {name: {k: statistics.median(r[k] for r in rounds) for k in rounds[0]} for name, rounds in runs.items()}
    how = f"one worker, {GATEWAY_LAYOUT} layout, medians of {GATEWAY_ROUNDS} rounds of {GATEWAY_SECONDS}s"
    rps = [(p["rps"], g["rps"]) for p, g in zip(runs["passthrough_c32"], runs["gateway_c32"], strict=True)]
    p50 = [(g["p50_ms"], p["p50_ms"]) for p, g in zip(runs["passthrough_c1"], runs["gateway_c1"], strict=True)]
    ratios = {
        "gateway/throughput-c32": entry(
            median["gateway_c32"]["rps"],
            median["passthrough_c32"]["rps"],
            median["passthrough_c32"]["rps"] / median["gateway_c32"]["rps"],
            "req/s",
            f"bare pass-through req/s / gatewayd's at 32 connections ({how})",
            [ref / ours for ref, ours in rps],
        ),
        "gateway/latency-p50-c1": entry(
            median["gateway_c1"]["p50_ms"],
            median["passthrough_c1"]["p50_ms"],
            median["gateway_c1"]["p50_ms"] / median["passthrough_c1"]["p50_ms"],
            "ms",
            f"gatewayd's p50 / the bare pass-through's at 1 connection ({how})",
            [ours / ref for ours, ref in p50],
        ),
    }
    return ratios, {"samples": samples, "medians": median, "worker_rss_mb": round(rss, 1)}


def gated(ratio: dict) -> float:
    """The figure the gate compares: the median of the passes' own ratios."""
    return statistics.median(ratio["per_pass"])


def gate(ratios: dict[str, dict], baseline: dict[str, dict]) -> tuple[list[str], list[str], list[str]]:
    """(failures, notes, lines for every ratio): a failure is a ratio more than FACTOR times
    its baseline's; a ratio without a baseline, or a baseline entry not measured, is a note."""
    failures, notes, table = [], [], []
    for name, now in ratios.items():
        base = baseline.get(name)
        figures = f"ours {fmt(now['ours'])} / reference {fmt(now['reference'])} {now['unit']}"
        if base is None:
            notes.append(f"NEW  {name}: ratio {gated(now):g} ({figures}) has no baseline entry (make bench-baseline)")
            table.append(f"  {name:<28} {gated(now):>9.4g}   (no baseline)")
            continue
        change = gated(now) / gated(base)
        verdict = "FAIL" if change > FACTOR else "ok"
        table.append(f"  {name:<28} {gated(now):>9.4g}   baseline {gated(base):>9.4g}   x{change:<6.2f} {verdict}")
        if change > FACTOR:
            then = f"ours {fmt(base['ours'])} / reference {fmt(base['reference'])} {base['unit']}"
            failures.append(
                f"FAIL {name}: ratio {gated(now):g} (best passes: {figures}) is {change:.2f}x the baseline's "
                f"{gated(base):g} ({then}); the gate allows {FACTOR:g}x"
            )
        elif change < 1 / FACTOR:
            notes.append(
                f"NOTE {name}: ratio {gated(now):g} is {1 / change:.2f}x better than the baseline's "
                f"{gated(base):g}; if that is meant, make bench-baseline"
            )
    for name in sorted(set(baseline) - set(ratios)):
        notes.append(f"GONE {name}: in the baseline, not measured in this run")
    return failures, notes, table


def plot(ratios: dict[str, dict], baseline: dict[str, dict], failed: set[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(ratios)
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(names) + 1.6))
    y = range(len(names))
    now = [gated(ratios[n]) for n in names]
    base = [gated(baseline[n]) if n in baseline else math.nan for n in names]
    ax.barh([i + 0.2 for i in y], now, 0.4, color=["#c44e52" if n in failed else "#4c72b0" for n in names],
            label="this run")  # fmt: skip
    ax.barh([i - 0.2 for i in y], base, 0.4, color="#bbbbbb", label="baseline")
    ax.scatter([b * FACTOR for b in base], [i for i in y], marker="|", s=220, color="crimson",
               label=f"gate: {FACTOR:g}x the baseline", zorder=3)  # fmt: skip
    for i, value in enumerate(now):
        ax.text(value, i + 0.2, f" {value:.3g}", va="center", fontsize=7)
    ax.axvline(1.0, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xscale("log")
    ax.set_yticks(list(y), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ratio to the reference measured in the same run (bigger is worse), log scale")
    ax.set_title(f"make bench-ci, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC ({os.cpu_count()} CPUs)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument(
        "--write-baseline", action="store_true", help=f"write {BASELINE.relative_to(REPO)} from this run, no gate"
    )
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of: " + ", ".join(PARTS))
    args = parser.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    if unknown := set(parts) - set(PARTS):
        parser.error(f"unknown parts {sorted(unknown)}")
    if args.write_baseline and set(parts) != set(PARTS):
        parser.error("--write-baseline measures every part: a baseline comes from one whole run")
    load = os.getloadavg()
    log(f"start: {os.cpu_count()} CPUs, load average {load[0]:.2f}; parts: {', '.join(parts)}")
    ratios: dict[str, dict] = {}
    raw: dict[str, object] = {}
    benches = {"core": CORE_ARGS, "pipeline": PIPELINE_ARGS}
    passes: dict[str, list[dict[str, dict]]] = {part: [] for part in benches if part in parts}
    pairs: dict[str, Pairs] = {"pipeline": PIPELINE_PAIRS}
    with tempfile.TemporaryDirectory(prefix="bench-ci-") as tmp:
        for n in range(1, PASSES + 1):
            for part, bench_args in benches.items():
                if part not in parts:
                    continue
                log(f"pass {n}/{PASSES}: pytest {' '.join(bench_args)}")
                passes[part].append(run_pytest(bench_args, Path(tmp) / f"{part}.json"))
                if part == "core" and n == 1:
                    pairs["core"] = core_pairs(passes[part][0])
                show(pairs[part], passes[part][-1])
    for part, runs in passes.items():
        ratios |= ratios_of(pairs[part], runs)
        raw[part] = runs
    if "gateway" in parts:
        gateway, raw["gateway"] = gateway_run()
        ratios |= gateway
    baseline_doc = json.loads(BASELINE.read_text()) if BASELINE.exists() else {"ratios": {}}
    baseline = baseline_doc["ratios"]
    failures, notes, table = gate(ratios, baseline)
    if args.write_baseline:
        failures = []  # the run is the new baseline: nothing to fail against
    wall = time.monotonic() - STARTED
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_at_start": load}
    results = {
        "how": __doc__.split("\n\n")[2].strip(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "wall_s": round(wall, 1),
        "ratios": ratios,
        "gate": {
            "baseline": str(BASELINE.relative_to(REPO)),
            "baseline_written": baseline_doc.get("when"),
            "factor": FACTOR,
            "failures": failures,
            "notes": notes,
        },
        "raw": raw,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ci.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    plot(ratios, baseline, {f.split()[1].rstrip(":") for f in failures}, RESULTS / "ci.png")
    log(f"wrote {(RESULTS / 'ci.json').relative_to(REPO)} and ci.png; ratios (bigger is worse):")
    print("\n".join(table))
    for note in notes:
        print(note)
    if args.write_baseline:
        doc = {
            "how": "bench/ci.py --write-baseline (make bench-baseline); the gate fails a ratio more than "
            f"{FACTOR:g}x its figure here",
            "when": results["when"],
            "machine": machine,
            "ratios": ratios,
        }
        BASELINE.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        log(f"wrote {BASELINE.relative_to(REPO)}: commit it with the reason in the message")
        return 0
    for failure in failures:
        print(failure)
    verdict = f"{len(failures)} of {len(ratios)} ratios failed the gate" if failures else "gate passed"
    log(f"{verdict} ({FACTOR:g}x the baseline); wall time {wall:.0f}s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
