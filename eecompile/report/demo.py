"""The end-to-end demo: train (or load cached) -> export tflite-int8 -> validate ->
choose a threshold on validation data -> run the test split with early exits -> report.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from eecompile.bundle.io import Bundle
from eecompile.errors import DataError, ModelLoadError, OutputPathError, PolicyError
from eecompile.data.datasets import load_data
from eecompile.export.pipeline import ExportOptions, export
from eecompile.export.validate import torch_exit_logits, validate_bundle
from eecompile.model.loading import load_zoo
from eecompile.model.zoo import ZOO
from eecompile.core.policies import make_policy, simulate
from eecompile.runtime.runner import Runtime
from eecompile.util import atomic_write_text

SWEEP = np.concatenate([np.linspace(0.3, 0.9, 13), np.linspace(0.92, 0.99, 8), [0.995, 0.999, 0.9999]])


@dataclass
class SweepPoint:
    threshold: float
    accuracy: float
    mean_latency_us: float
    exit_share: list[float]


def sweep(policy_name: str, exit_logits: list[np.ndarray], y: np.ndarray, cum_latency_us: np.ndarray,
          thresholds=SWEEP) -> list[SweepPoint]:
    """Accuracy and expected latency of early exit at each threshold (from per-exit logits)."""
    points = []
    n_exits = len(exit_logits)
    for t in thresholds:
        exit_idx, pred, _ = simulate(make_policy(policy_name, float(t), n_exits), exit_logits)
        share = np.bincount(exit_idx, minlength=n_exits) / len(y)
        points.append(SweepPoint(float(t), float(np.mean(pred == y)), float(cum_latency_us[exit_idx].mean()),
                                 share.tolist()))
    return points


def choose_threshold(points: list[SweepPoint], final_accuracy: float, full_latency_us: float,
                     latency_budget: float | None = 0.6, max_drop_pts: float = 0.0) -> SweepPoint:
    """Pick a threshold from a validation sweep.

    With ``latency_budget`` (a fraction of the full network's latency): the most accurate
    threshold whose expected latency fits the budget (ties: the faster). Without it: the
    fastest threshold whose accuracy is within ``max_drop_pts`` of the final exit's.
    Falls back to the most conservative threshold when nothing qualifies.
    """
    if latency_budget is not None:
        ok = [p for p in points if p.mean_latency_us <= latency_budget * full_latency_us]
        if ok:
            return max(ok, key=lambda p: (round(p.accuracy, 6), -p.mean_latency_us))
        return min(points, key=lambda p: p.mean_latency_us)
    ok = [p for p in points if p.accuracy >= final_accuracy - max_drop_pts / 100]
    if not ok:
        return max(points, key=lambda p: p.threshold)
    return min(ok, key=lambda p: (p.mean_latency_us, -p.threshold))


def paired_latency(rt: Runtime, x: np.ndarray, threshold: float, chunk: int = 500) -> tuple[object, object]:
    """Run full-depth and early-exit passes interleaved chunk by chunk (the machine drifts)."""
    full_parts, early_parts = [], []
    for i in range(0, len(x), chunk):
        xs = x[i : i + chunk]
        full_parts.append(rt.run(xs, no_early_exit=True, keep_logits=True))
        early_parts.append(rt.run(xs, policy="max-prob", thresholds=threshold))
    return _concat(full_parts), _concat(early_parts)


def _concat(parts):
    from eecompile.runtime.runner import RunResult

    out = RunResult(np.concatenate([p.class_idx for p in parts]), np.concatenate([p.exit_idx for p in parts]),
                    np.concatenate([p.probs for p in parts]), np.concatenate([p.stage_time_us for p in parts]))
    if parts[0].exit_logits:
        out.exit_logits = [np.concatenate([p.exit_logits[k] for p in parts]) for k in range(len(parts[0].exit_logits))]
    return out


DEMO_FILES = ("report.json", "tradeoff.png", "bundle")


def check_demo_dir(out_dir: str | Path) -> Path:
    """The demo writes report.json, tradeoff.png and bundle/ into ``out_dir``: refuse a path
    that is a file, or a non-empty directory that holds anything else."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"{out} exists and is not a directory", hint="pass --out with a directory")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in DEMO_FILES and not p.name.startswith("."))
        if foreign:
            raise OutputPathError(f"{out} holds files that are not the demo's ({', '.join(foreign[:3])})",
                                  hint="pass --out with an empty or new directory, or a previous demo's")
    return out


def run_demo(model_name: str = "dsnet-fmnist", out_dir: str | Path = "demo-out", n_test: int | None = None,
             latency_budget: float = 0.6, quiet: bool = False) -> dict:
    """Run the whole demo; returns the report dict (also written to ``out_dir/report.json``)."""
    if model_name not in ZOO:
        raise ModelLoadError(f"no zoo model named {model_name!r}", hint=f"use one of {', '.join(sorted(ZOO))}")
    if n_test is not None and n_test < 1:
        raise DataError(f"--n-test {n_test}: need at least one test sample", hint="pass --n-test 1000, or omit it")
    if not 0.0 < latency_budget <= 1.0:
        raise PolicyError(f"latency budget {latency_budget} is not a fraction of the full network's latency in (0, 1]",
                          hint="pass e.g. --latency-budget 0.6")
    out = check_demo_dir(out_dir)
    entry = ZOO[model_name]
    ds = entry.dataset
    t0 = time.perf_counter()
    model = load_zoo(model_name, quiet=quiet)
    t_train = time.perf_counter() - t0

    t0 = time.perf_counter()
    bundle = export(model, "tflite-int8", load_data(f"{ds}:train:512"), out / "bundle",
                    val_data=load_data(f"{ds}:val:1000"),
                    options=ExportOptions(force=True, quiet=quiet, model_source=model_name))
    t_export = time.perf_counter() - t0

    rt = Runtime(bundle)
    val = load_data(f"{ds}:val")
    val_run = rt.run(val.x, no_early_exit=True, keep_logits=True)
    cum_val = np.cumsum(val_run.stage_time_us.mean(axis=0))
    val_points = sweep("max-prob", val_run.exit_logits, val.y, cum_val)
    final_val_acc = float(np.mean(val_run.exit_logits[-1].argmax(1) == val.y))
    chosen = choose_threshold(val_points, final_val_acc, float(cum_val[-1]), latency_budget=latency_budget)
    _write_threshold(bundle, model, val, chosen.threshold)

    test = load_data(f"{ds}:test").take(n_test)
    full, early = paired_latency(rt, test.x, chosen.threshold)
    float_logits = torch_exit_logits(model, test.x)
    cum_test = np.cumsum(full.stage_time_us.mean(axis=0))
    test_points = sweep("max-prob", full.exit_logits, test.y, cum_test)

    n_exits = rt.n_exits
    share = np.bincount(early.exit_idx, minlength=n_exits) / len(test)
    macs = np.cumsum([s.macs for s in bundle.manifest.stages])
    exits = []
    for k in range(n_exits):
        exits.append({"exit_idx": k, "cum_macs": int(macs[k]),
                      "accuracy_float": float(np.mean(float_logits[k].argmax(1) == test.y)),
                      "accuracy_int8": float(np.mean(full.exit_logits[k].argmax(1) == test.y)),
                      "share_exiting": float(share[k]), "cum_latency_us": float(cum_test[k])})
    final_acc = exits[-1]["accuracy_int8"]
    early_acc = float(np.mean(early.class_idx == test.y))
    prof = profile_on_host(bundle)
    c_p50 = np.array([e["latency_us"]["p50"] for e in prof["exits"]])
    for k, e in enumerate(exits):
        e["c_p50_us"] = float(c_p50[k])
    report = {
        "model": model_name, "dataset": ds, "bundle": str(bundle.root), "n_test": len(test),
        "train_or_load_s": round(t_train, 2), "export_s": round(t_export, 2),
        "threshold": chosen.threshold, "threshold_chosen_on": f"{ds}:val ({len(val)} samples)",
        "threshold_rule": f"most accurate on val with expected latency <= {latency_budget}x the full network",
        "exits": exits,
        "final_exit": {"accuracy": final_acc, "mean_latency_us": float(full.latency_us.mean())},
        "early_exit": {"accuracy": early_acc, "mean_latency_us": float(early.latency_us.mean())},
        "accuracy_gap_pts": 100 * (final_acc - early_acc),
        "latency_ratio": float(early.latency_us.mean() / full.latency_us.mean()),
        "mac_ratio": float(macs[early.exit_idx].mean() / macs[-1]),
        "profile": {"device": prof["device"]["id"], "model": prof["device"]["model"],
                    "p50_us": c_p50.tolist(), "stages_p50_us": [s["p50"] for s in prof["exits"][-1]["stages_us"]],
                    "load_ms": prof["load"]["t_load_ms"], "first_ms": prof["load"]["t_first_ms"],
                    "vm_hwm_kb": prof["memory"]["vm_hwm_kb"].get("done"),
                    "early_exit_mean_us": float(c_p50[early.exit_idx].mean()),
                    "c_latency_ratio": float(c_p50[early.exit_idx].mean() / c_p50[-1]),
                    "file": str(bundle.root / "profiles" / f"{prof['device']['id']}.json")},
        "validation": bundle.manifest.validation,
        "boundaries": bundle.manifest.boundaries,
        "sweep_test": [asdict(p) for p in test_points],
    }
    from eecompile.report.plot import plot_tradeoff

    plot_tradeoff(test_points, exits, report, out / "tradeoff.png")
    report["plot"] = str(out / "tradeoff.png")
    atomic_write_text(out / "report.json", json.dumps(report, indent=2))
    return report


def profile_on_host(bundle: Bundle) -> dict:
    """Every exit's cost measured by the bundle's C runner on this machine (eecompile profile
    --device host); saved into the bundle's profiles/ with its plot."""
    from eecompile.profile.devices import parse_device
    from eecompile.profile.measure import ProfileOptions, profile_device
    from eecompile.profile.report import plot_profile
    from eecompile.profile.runner import RunSettings
    from eecompile.profile.schema import profile_path, save_profile

    prof = profile_device(bundle, parse_device("host"),
                          ProfileOptions(settings=RunSettings(runs=500, warmup=50, min_secs=2.0), energy="off"))
    save_profile(prof, bundle)
    plot_profile(prof, profile_path(bundle, prof["device"]["id"]).with_suffix(".png"))
    return prof


def _write_threshold(bundle: Bundle, model, val, threshold: float) -> None:
    """Store the chosen threshold in the manifest and re-validate the decisions at it."""
    for e in bundle.manifest.exits[:-1]:
        e.threshold = threshold
    report = validate_bundle(bundle, model, val.take(1000))
    bundle.manifest.validation = {**report.to_dict(), "data": f"{val.name} (1000 samples)"}
    bundle.save_manifest()
