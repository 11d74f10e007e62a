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


def plot_cpu(result: dict, path: Path) -> None:
    """CPU per forwarded request, each server's own (every thread), at 1 and 32 connections:
    the pass-through, gatewayd on each interface and, with --rod, the measuring rod. The
    line at 32 connections is what a server may spend per request to serve 0.9x the
    pass-through's req/s on its one core."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = result["targets"]
    floors = targets["floors"]
    names = ["passthrough", *(name for name, figures in targets.items() if "cpu_us_per_request_c1" in figures)]
    colours = ["#b0b0b0" if n == "passthrough" else "#8fbf6a" if n.startswith("rod") else "#3a7bd5" for n in names]
    fig, panels = plt.subplots(1, 2, figsize=(11, 4))
    for panel, conns in zip(panels, ("c1", "c32"), strict=True):
        values = [
            floors[f"passthrough_cpu_us_per_request_{conns}"]
            if n == "passthrough"
            else targets[n][f"cpu_us_per_request_{conns}"]
            for n in names
        ]
        panel.bar(names, values, color=colours)
        for i, value in enumerate(values):
            panel.annotate(f"{value:.0f}", (i, value), ha="center", va="bottom", fontsize=9)
        if conns == "c32":
            budget = floors["passthrough_cpu_us_per_request_c32"] / 0.9
            panel.axhline(budget, color="#d55e3a", linestyle="--", linewidth=1)
            label = f"0.9x the pass-through's req/s: {budget:.0f} µs"
            panel.annotate(label, (-0.4, budget * 1.01), ha="left", va="bottom", fontsize=8, color="#d55e3a")
        panel.set_title(f"{conns[1:]} connection{'s' if conns != 'c1' else ''}", fontsize=10)
        panel.set_ylabel("server CPU per request (µs)")
        panel.tick_params(axis="x", labelsize=8, rotation=15)
    fig.suptitle(f"where a forwarded request's CPU goes, one worker on a core of its own; {result['when']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
