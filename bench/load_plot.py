"""bench/load_bench.py's picture: latency against offered load, one panel per percentile, the
direct mock's beside the servers in front of it (log scale: the tails span decades)."""

from __future__ import annotations

from pathlib import Path


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rate = result["rate"]
    rows = list(rate["by_load"].values())
    servers = [name for name in rows[0] if isinstance(rows[0][name], dict)]
    offered = [row["offered_rps"] for row in rows]
    fig, panels = plt.subplots(1, 3, figsize=(14, 4.4), sharex=True)
    for panel, percentile in zip(panels, ("p50", "p99", "p99.9"), strict=True):
        for name in servers:
            values = [row[name][f"{percentile}_us"] for row in rows]
            panel.plot(offered, values, marker="o", label=name, linestyle=":" if name == "mock" else "-")
            for x, v in zip(offered, values, strict=True):
                panel.annotate(str(v), (x, v), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=7)
        panel.set_title(f"{percentile} latency")
        panel.set_yscale("log")
        panel.set_xlabel("offered load (req/s, open loop)")
        panel.set_ylabel("µs")
        panel.grid(alpha=0.3)
    panels[0].legend(fontsize=8)
    fig.suptitle(
        f"latency at 25/50/80% of gatewayd's saturation ({rate['saturation_rps']:.0f} req/s, one worker), "
        f"oha with coordinated-omission correction; {result['when']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
