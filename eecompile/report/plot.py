"""Plots (matplotlib, Agg): accuracy vs mean latency of early exit over a threshold sweep."""

from __future__ import annotations

import io
from pathlib import Path

from eecompile.util import atomic_write_bytes


def plot_tradeoff(points, exits: list[dict], report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.plot([p.mean_latency_us for p in points], [100 * p.accuracy for p in points], "o-", ms=3,
            label="early exit, max-prob threshold sweep (int8)")
    ax.plot([e["cum_latency_us"] for e in exits], [100 * e["accuracy_int8"] for e in exits], "s--", color="gray",
            label="every sample to exit k")
    for e in exits:
        ax.annotate(f"exit {e['exit_idx']}", (e["cum_latency_us"], 100 * e["accuracy_int8"]),
                    textcoords="offset points", xytext=(4, -10), fontsize=8, color="gray")
    ee = report["early_exit"]
    ax.plot([ee["mean_latency_us"]], [100 * ee["accuracy"]], "r*", ms=14,
            label=f"chosen t={report['threshold']:.3g} (measured)")
    ax.set_xlabel("mean latency per sample (us, LiteRT, 1 thread)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{report['model']} on {report['dataset']}: accuracy vs latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
