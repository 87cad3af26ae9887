"""Plots (matplotlib, Agg): the demo's accuracy vs latency."""

from __future__ import annotations

import io
from pathlib import Path

from eecompile.util import atomic_write_bytes


def plot_tradeoff(report: dict, path: Path) -> None:
    """The calibration's frontier (rules found on the validation split, held-out figures, in the
    C runner's modelled latency), every exit alone, and the test split's points: the final exit,
    the calibrated rule (measured by the C runner) and the oracle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    pts = sorted(report["frontier"], key=lambda p: p["cost"]["latency"])
    ax.plot([p["cost"]["latency"] for p in pts], [100 * p["accuracy"] for p in pts], "o-", ms=3,
            label=f"{report['policy']} rules at a range of accuracy drops (validation hold-out)")
    ex = report["exits"]
    ax.plot([e["c_p50_us"] for e in ex], [100 * e["accuracy_int8"] for e in ex], "s--", color="gray",
            label="every sample to exit k (test)")
    for e in ex:
        ax.annotate(f"exit {e['exit_idx']}", (e["c_p50_us"], 100 * e["accuracy_int8"]), textcoords="offset points",
                    xytext=(4, -10), fontsize=8, color="gray")
    o = report["oracle"]
    ax.plot([o["modelled_latency_us"]], [100 * o["accuracy"]], "g^", ms=9, label="oracle (earliest correct exit)")
    ee = report["early_exit"]
    ax.plot([ee["mean_latency_us"]], [100 * ee["accuracy"]], "r*", ms=14,
            label=f"calibrated: {report['budget']} (test, measured)")
    ax.set_xlabel("mean latency per sample (us, C runner on this machine, 1 thread)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{report['model']} on {report['dataset']}: accuracy vs latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
