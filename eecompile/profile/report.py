"""Profiles for people: a console table per device, a side-by-side table for a fleet, and a PNG
(cumulative latency per exit with p10-p90 bars, per-stage stacked bars, energy on a second axis)."""

from __future__ import annotations

import io
from pathlib import Path

from rich.table import Table

from eecompile.util import atomic_write_bytes


def _energy(e: dict | None) -> str:
    if not e:
        return "-"
    return f"{e['mj_per_inference']:.4g} mJ ({e['label']})"


def profile_table(prof: dict) -> Table:
    d = prof["device"]
    flags = []
    if not prof["timings_meaningful"]:
        flags.append("EMULATED: timings mean nothing")
    if not prof["complete"]:
        flags.append(f"INCOMPLETE: {prof['incomplete_reason']}")
    if prof["throttling"]["throttled"]:
        flags.append("THROTTLED: " + "; ".join(prof["throttling"]["reasons"]))
    title = (f"{prof['bundle']['name']} on {d['id']} ({d['model']}, {d['abi']}), {prof['settings']['threads']} thread(s)"
             + ("".join(f"\n{f}" for f in flags)))
    t = Table(title=title)
    for col in ("exit", "p50 us", "p10-p90 us", "p99 us", "stages p50 us", "decisions us", "energy/inference"):
        t.add_column(col, justify="right")
    for e in prof["exits"]:
        lat = e["latency_us"]
        t.add_row(str(e["exit"]), f"{lat['p50']:.1f}", f"{lat['p10']:.1f}-{lat['p90']:.1f}", f"{lat['p99']:.1f}",
                  " + ".join(f"{s['p50']:.1f}" for s in e["stages_us"]), f"{e['decision_us']['p50']:.2f}",
                  _energy(e["energy"]))
    return t


def summary_lines(prof: dict) -> list[str]:
    mem = prof["memory"]
    lines = [f"load {prof['load']['t_load_ms']:.1f} ms, first inference {prof['load']['t_first_ms']:.2f} ms; "
             f"peak memory (VmHWM) {mem['vm_hwm_kb'].get('done') or mem['vm_hwm_kb'].get('latency')} kB "
             f"(+{mem['growth_load_kb']} kB loading, +{mem['growth_runs_kb']} kB over the runs)"
             if prof["load"]["t_load_ms"] is not None and prof["load"]["t_first_ms"] is not None else "load: not measured"]
    rep = prof["repeats"]
    if rep.get("n", 0) > 1:
        last = rep["spread"][-1]
        lines.append(f"{rep['n']} runs: full-path p50 {last['min_us']:.1f}-{last['max_us']:.1f} us "
                     f"(range {100 * last['rel_range']:.1f}% of the median)")
    en = prof["energy"]
    if en.get("method") in (None,):
        lines.append(f"energy: not measured -- {en.get('reason')}")
    return lines


def fleet_table(profiles: list[dict]) -> Table:
    """Devices side by side: each exit's p50 latency and energy per device."""
    t = Table(title=f"{profiles[0]['bundle']['name']}: p50 latency per exit (us), energy per inference")
    t.add_column("exit", justify="right")
    for p in profiles:
        t.add_column(f"{p['device']['id']}\n{p['device']['model']}" + ("\n(emulated)" if p["device"]["emulated"] else ""),
                     justify="right")
    n = max(len(p["exits"]) for p in profiles)
    for k in range(n):
        row = [str(k)]
        for p in profiles:
            e = p["exits"][k] if k < len(p["exits"]) else None
            row.append("-" if e is None else f"{e['latency_us']['p50']:.1f}" + (
                f"\n{_energy(e['energy'])}" if e["energy"] else ""))
        t.add_row(*row)
    return t


def plot_profile(prof: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exits = prof["exits"]
    ks = [e["exit"] for e in exits]
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    bottoms = [0.0] * len(exits)
    n_stages = max(len(e["stages_us"]) for e in exits)
    colors = plt.cm.Blues([0.35 + 0.6 * s / max(1, n_stages - 1) for s in range(n_stages)])
    for s in range(n_stages):
        vals = [e["stages_us"][s]["p50"] if s < len(e["stages_us"]) else 0.0 for e in exits]
        ax.bar(ks, vals, bottom=bottoms, width=0.5, color=colors[s], label=f"stage {s} (p50)")
        bottoms = [b + v for b, v in zip(bottoms, vals)]
    p50 = [e["latency_us"]["p50"] for e in exits]
    lo = [e["latency_us"]["p50"] - e["latency_us"]["p10"] for e in exits]
    hi = [e["latency_us"]["p90"] - e["latency_us"]["p50"] for e in exits]
    ax.errorbar(ks, p50, yerr=[lo, hi], fmt="o-", color="black", capsize=4, label="inference to exit k (p50, p10-p90)")
    ax.set_xlabel("exit")
    ax.set_ylabel("latency (us)")
    ax.set_xticks(ks)
    d = prof["device"]
    title = f"{prof['bundle']['name']} on {d['id']} ({d['abi']})"
    if not prof["timings_meaningful"]:
        title += " -- EMULATED, timings mean nothing"
    ax.set_title(title, fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    if any(e["energy"] for e in exits):
        ax2 = ax.twinx()
        ks_e = [e["exit"] for e in exits if e["energy"]]
        mj = [e["energy"]["mj_per_inference"] for e in exits if e["energy"]]
        label = exits[0]["energy"]["label"] if exits[0]["energy"] else "energy"
        line, = ax2.plot(ks_e, mj, "s--", color="tab:red", label=f"energy per inference ({label})")
        ax2.set_ylabel("energy per inference (mJ)", color="tab:red")
        handles.append(line)
        labels.append(line.get_label())
    ax.legend(handles, labels, fontsize=8, loc="upper left")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
