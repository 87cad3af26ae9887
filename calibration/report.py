"""A calibration for people: a table of the chosen rule on the held-out data, and the Pareto
frontier (accuracy vs cost, held-out) with the chosen point, the final exit alone and the oracle."""

from __future__ import annotations

import io
from pathlib import Path

from rich.table import Table

from eecompile.util import atomic_write_bytes


def _fmt(v: float, unit: str) -> str:
    return f"{v / 1000:.4g} ms" if unit == "us" else f"{v:.4g} {unit}"


def calibration_table(report: dict) -> Table:
    r, h = report["rule"], report["holdout"]
    prim = report["primary_cost"]
    unit = report["costs"][prim]["unit"]
    t = Table(title=f"{report['bundle']['name']}: {r['policy']} under {report['budget']['spec']} "
                    f"(held-out: {report['data']['holdout']} samples)")
    for col in ("exit", "kept", "threshold", "share exiting (held-out)", f"cost to reach ({prim})"):
        t.add_column(col, justify="right")
    per_exit = report["costs"][prim]["exit_cost"]
    for k, (kept, th, sh) in enumerate(zip(r["kept"], r["thresholds"], h["exit_shares"])):
        t.add_row(str(k), "yes" if kept else "dropped", "-" if k == len(r["kept"]) - 1 else f"{th:.4g}",
                  f"{100 * sh:.1f}%", _fmt(per_exit[k], unit))
    return t


def summary_lines(report: dict) -> list[str]:
    h, prim = report["holdout"], report["primary_cost"]
    unit = report["costs"][prim]["unit"]
    lines = [f"held-out accuracy {100 * h['accuracy']:.2f}% vs {100 * h['final_accuracy']:.2f}% at the final exit "
             f"(drop {h['drop_pts']:.2f} pts); mean cost {_fmt(h['cost'][prim], unit)} = "
             f"{h['ratio_to_full'][prim]:.3f}x the full path, {h['ratio_to_oracle'][prim]:.3f}x the oracle "
             f"({_fmt(h['oracle_cost'][prim], unit)})"]
    if prim != "macs":
        lines.append(f"in MACs: {h['ratio_to_full']['macs']:.3f}x the full network "
                     f"(the oracle {h['oracle_cost']['macs'] / h['full_path_cost']['macs']:.3f}x)")
    if h.get("p95_latency_us") is not None:
        lines.append(f"p95 latency {h['p95_latency_us'] / 1000:.4g} ms")
    g = report.get("guarantee")
    if g:
        parts = []
        if g.get("eps") is not None:
            parts.append(f"accuracy loss <= {g['eps']:g}")
        if g.get("cost_bound") is not None:
            parts.append(f"mean {g['cost_kind']} <= {_fmt(g['cost_bound'], g.get('cost_unit', ''))} "
                         "(modelled from the profile: per-exit mean costs measured on the device, combined per "
                         "sample; not measured per sample)")
        lines.append(f"guaranteed with probability >= {1 - g['delta']:g}: {' and '.join(parts)} "
                     f"({g['n_calibration']} calibration samples, {g['certified']} of {g['family_size']} rules certified"
                     + (f"; each guarantee tested at delta {g['delta_per_test']:g}" if len(parts) > 1 else "") + ")")
        if g.get("checked_on_search"):
            lines.append(f"budget terms met on the search data (not certified): {g['checked_on_search']}")
    if report.get("policies_judged"):
        lines.append("policies compared on half the search data: " + ", ".join(
            f"{p} {100 * d['accuracy']:.2f}% at {_fmt(d['cost'], unit)}" for p, d in report["policies_judged"].items()))
    lines += [f"note: {n}" for n in report.get("notes", [])]
    return lines


def plot_frontier(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prim = report["primary_cost"]
    unit = report["costs"][prim]["unit"]
    scale = 1e-3 if unit == "us" else 1.0
    label = "ms" if unit == "us" else unit
    h = report["holdout"]
    pts = sorted(report["frontier"], key=lambda p: p["cost"][prim])
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.plot([p["cost"][prim] * scale for p in pts], [100 * p["accuracy"] for p in pts], "o-", ms=4,
            label=f"{report['policy']} rules found on the search data (held-out)")
    ax.plot([h["full_path_cost"][prim] * scale], [100 * h["final_accuracy"]], "ks", ms=8, label="final exit only")
    ax.plot([h["oracle_cost"][prim] * scale], [100 * h["oracle_accuracy"]], "g^", ms=9,
            label="oracle (earliest correct exit)")
    ax.plot([h["cost"][prim] * scale], [100 * h["accuracy"]], "r*", ms=15,
            label=f"chosen: {report['budget']['spec']}")
    ax.set_xlabel(f"mean {prim} per inference ({label}; {report['costs'][prim]['source']})", fontsize=8)
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title(f"{report['bundle']['name']}: accuracy vs cost", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
