"""What the A/B benches share (bench/body_read.py, bench/client_watch.py): variants of one
server measured in alternation, their medians saved with every sample, and a bar picture
with a panel per figure."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def save(name: str, how: str, args, samples: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    """Writes bench/results/`name`.json (the medians and every sample) and returns the medians."""
    medians = {
        variant: {k: round(statistics.median(v), 3) for k, v in runs.items()} for variant, runs in samples.items()
    }
    result = {"how": how, "seconds": args.seconds, "rounds": args.rounds, "medians": medians, "samples": samples}
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    for variant, figures in medians.items():
        print(f"{variant:20s} {figures}")
    return medians


def bars(medians: dict, panels: list[tuple[str, str]], colours: list[str], title: str, path: Path) -> None:
    """One bar panel per (figure, panel title), a bar per variant, its value written on it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(medians)
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.5))
    for ax, (key, panel_title) in zip(axes, panels, strict=True):
        values = [medians[variant][key] for variant in variants]
        ax.bar(variants, values, color=colours)
        ax.set_title(panel_title, fontsize=10)
        ax.set_ylim(0, max(values) * 1.15)
        for i, value in enumerate(values):
            ax.annotate(f"{value:.4g}", (i, value), ha="center", va="bottom", fontsize=9)
        ax.tick_params(axis="x", labelsize=8, rotation=15)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
