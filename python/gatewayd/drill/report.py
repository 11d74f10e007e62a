"""The drill's reports: drill.json for machines, drill.html for people, one timeline picture
per change scenario (requests per second by served version and replica, the commands,
every acknowledgement, and the last request under the reverted version)."""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from gatewayd.drill.judge import Result, Served, under
from gatewayd.drill.scenarios import Run

BIN_S = 0.25


def write(out: Path, how: dict, runs: list[Run], results: list[Result], requests: list[Served]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "how": how,
        "passed": all(r.passed for r in results),
        "scenarios": [asdict(r) for r in results],
        "commands": {run.name: [asdict(m) for m in run.marks] for run in runs},
    }
    (out / "drill.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    pictures = {run.name: _timeline(run, requests) for run in runs}
    (out / "drill.html").write_text(_page(how, results, pictures))


def _page(how: dict, results: list[Result], pictures: dict[str, bytes]) -> str:
    verdict = "PASSED" if all(r.passed for r in results) else "FAILED"
    parts = [
        "<!doctype html><html lang=en><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width, initial-scale=1'>",
        f"<title>gatewayd drill: {verdict}</title>",
        "<style>body{font:15px system-ui,sans-serif;max-width:70em;margin:1em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}"
        ".pass{color:#17732b}.fail{color:#b00020}img{max-width:100%}</style>",
        f"<h1>gatewayd drill: <span class={'pass' if verdict == 'PASSED' else 'fail'}>{verdict}</span></h1>",
        "<p>" + html.escape(", ".join(f"{k}: {v}" for k, v in how.items())) + "</p>",
    ]
    for r in results:
        state = "pass" if r.passed else "fail"
        parts.append(f"<h2 id={r.name}>{html.escape(r.name)}: <span class={state}>{state.upper()}</span></h2>")
        if r.problems:
            parts.append("<ul>" + "".join(f"<li class=fail>{html.escape(p)}</li>" for p in r.problems) + "</ul>")
        rows = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(json.dumps(v) if not isinstance(v, str) else v)}</td></tr>"
            for k, v in r.figures.items()
        )
        parts.append(f"<table>{rows}</table>")
        if r.name in pictures:
            data = base64.b64encode(pictures[r.name]).decode()
            parts.append(f"<p><img alt='{html.escape(r.name)} timeline' src='data:image/png;base64,{data}'></p>")
    return "\n".join(parts) + "\n</html>\n"


def _timeline(run: Run, requests: list[Served]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = run.started
    window = [s for s in requests if run.started <= s.started <= run.ended]
    reverted = {id(s) for s in under(run, window)}
    counts: Counter = Counter()
    for s in window:
        label = f"{run.domain} v{s.versions[run.domain]}" + (" (reverted)" if id(s) in reverted else "")
        counts[(label, s.chain, int((s.started - t0) / BIN_S))] += 1
    fig, ax = plt.subplots(figsize=(11, 4.2))
    series = sorted({(label, chain) for label, chain, _ in counts})
    last_bin = int((run.ended - t0) / BIN_S) + 1
    for label, chain in series:
        xs = [b * BIN_S for b in range(last_bin)]
        ys = [counts[(label, chain, b)] / BIN_S for b in range(last_bin)]
        style = "-" if "reverted" not in label else "--"
        ax.plot(xs, ys, linewidth=1, linestyle=style, drawstyle="steps-post", label=f"{label} · {chain}")
    top = ax.get_ylim()[1]
    for mark in run.marks:
        ax.axvline(mark.issued - t0, color="black", linestyle=":", linewidth=1)
        ax.text(mark.issued - t0, top * 0.97, f" {mark.name}", fontsize=8, va="top")
        for at in mark.acks.values():
            ax.plot([at - t0], [top * 0.9], marker="v", color="crimson", markersize=5)
    last = max((s.started for s in window if id(s) in reverted), default=None)
    if last is not None:
        ax.axvline(last - t0, color="purple", linewidth=1.2)
        said = (last - run.revert.issued) * 1000
        ax.text(last - t0, top * 0.8, f" last request under v{run.version}: {said:+.0f} ms", fontsize=8, color="purple")
    ax.set_xlabel("seconds since the scenario started")
    ax.set_ylabel("requests/s (audit records)")
    ax.set_title(f"{run.name}: served version by replica; ▼ acknowledgements, dotted: commands")
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
