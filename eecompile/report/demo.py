"""The end-to-end demo: train (or load cached) -> export tflite-int8 -> validate -> profile every
exit with the C runner on this machine -> calibrate the exits and rule on the validation split
under a latency budget -> run the test split with early exits (Python for accuracy, the C
runner for measured latency) -> put the bundle into a fresh copy of the Android app, check its
JNI bridge in a JVM here and build its APK offline -> report.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np

from eecompile.bundle.io import Bundle, load_bundle
from eecompile.core.quant import to_graph_input
from eecompile.data.datasets import load_data
from eecompile.errors import DataError, ModelLoadError, OutputPathError, PolicyError, ToolError
from eecompile.export.pipeline import ExportOptions, export
from eecompile.export.validate import torch_exit_logits, validate_bundle
from eecompile.model.loading import load_zoo
from eecompile.model.zoo import ZOO
from eecompile.runtime.runner import Runtime
from eecompile.util import atomic_write_text

DEMO_FILES = ("report.json", "tradeoff.png", "bundle", "harness", "android_app", "eecompile-demo.apk")


def check_demo_dir(out_dir: str | Path) -> Path:
    """The demo writes DEMO_FILES into ``out_dir``: refuse a path that is a file, or a non-empty
    directory that holds anything else."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"{out} exists and is not a directory", hint="pass --out with a directory")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in DEMO_FILES and not p.name.startswith("."))
        if foreign:
            raise OutputPathError(f"{out} holds files that are not the demo's ({', '.join(foreign[:3])})",
                                  hint="pass --out with an empty or new directory, or a previous demo's")
    return out


def profile_on_host(bundle: Bundle) -> dict:
    """Every exit's cost measured by the bundle's C runner on this machine (eecompile profile
    --device host); saved into the bundle's profiles/ with its plot."""
    from eecompile.profile.devices import parse_device
    from eecompile.profile.measure import ProfileOptions, profile_device
    from eecompile.profile.report import plot_profile
    from eecompile.profile.runner import RunSettings
    from eecompile.profile.schema import profile_path, save_profile

    prof = profile_device(bundle, parse_device("host"),
                          ProfileOptions(settings=RunSettings(runs=1000, warmup=100, min_secs=3.0), energy="off"))
    save_profile(prof, bundle)
    plot_profile(prof, profile_path(bundle, prof["device"]["id"]).with_suffix(".png"))
    return prof


def measure_c(bundle: Bundle, x: np.ndarray, harness_dir: Path, rounds: int = 5) -> dict:
    """Mean latency per sample measured by the C runner (ee_run) on ``x``: the calibrated rule,
    and the full path (every exit kept and evaluated), interleaved in ``rounds`` rounds of quiet
    runs (no output between samples; which of the two runs first alternates between rounds).
    This machine drifts by +-15% over minutes, so the ratio is the median of the per-round
    ratios, the means the medians of the runs; the classes come from one more run."""
    from eecompile.harness import build_harness, find_litert_lib, generate_harness

    exe = build_harness(generate_harness(bundle, harness_dir, force=True)).ee_run
    inputs = harness_dir / "test_inputs.npy"
    np.save(inputs, np.ascontiguousarray(np.transpose(x, bundle.manifest.input[0].perm_from_torch)))
    lib = str(find_litert_lib())
    every = ",".join("1" for _ in bundle.manifest.exits)
    modes = {"early": [], "full": ["--all-exits", "--kept", every]}

    def ee_run(*extra: str) -> dict:
        proc = subprocess.run([str(exe), str(bundle.root), str(inputs), "--litert", lib, "--json", *extra],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise ToolError(f"ee_run failed on the demo bundle: {proc.stderr.strip()[-300:]}", hint="see above")
        return json.loads(proc.stdout)

    times: dict[str, list[float]] = {name: [] for name in modes}
    for i in range(rounds):  # which mode runs first alternates, so a drift does not favour one side
        for name in (list(modes) if i % 2 == 0 else list(modes)[::-1]):
            times[name].append(ee_run("--quiet", *modes[name])["summary"]["mean_total_us"])
    out: dict = {"ratio": float(np.median(np.array(times["early"]) / np.array(times["full"])))}
    for name, extra in modes.items():
        res = ee_run(*extra)
        out[name] = {"mean_latency_us": float(np.median(times[name])), "runs_us": times[name],
                     "exit_counts": res["summary"]["exit_counts"], "class_idx": [s["class_idx"] for s in res["samples"]]}
    return out


def run_demo(model_name: str = "dsnet-fmnist", out_dir: str | Path = "demo-out", n_test: int | None = None,
             latency_budget: float = 0.55, quiet: bool = False) -> dict:
    """Run the whole demo; returns the report dict (also written to ``out_dir/report.json``)."""
    if model_name not in ZOO:
        raise ModelLoadError(f"no zoo model named {model_name!r}", hint=f"use one of {', '.join(sorted(ZOO))}")
    if n_test is not None and n_test < 1:
        raise DataError(f"--n-test {n_test}: need at least one test sample", hint="pass --n-test 1000, or omit it")
    if not 0.0 < latency_budget <= 1.0:
        raise PolicyError(f"latency budget {latency_budget} is not a fraction of the full network's latency in (0, 1]",
                          hint="pass e.g. --latency-budget 0.6")
    out = check_demo_dir(out_dir)
    ds = ZOO[model_name].dataset
    t0 = time.perf_counter()
    model = load_zoo(model_name, quiet=quiet)
    t_train = time.perf_counter() - t0

    t0 = time.perf_counter()
    bundle = export(model, "tflite-int8", load_data(f"{ds}:train:512"), out / "bundle",
                    val_data=load_data(f"{ds}:val:1000"),
                    options=ExportOptions(force=True, quiet=quiet, model_source=model_name))
    t_export = time.perf_counter() - t0

    prof = profile_on_host(bundle)
    c_full = prof["exits"][-1]["latency_us"]["tmean"]
    from eecompile.calibrate.budget import Budget
    from eecompile.calibrate.calibrate import CalibrateOptions, calibrate

    val = load_data(f"{ds}:val")
    t0 = time.perf_counter()
    cal = calibrate(bundle, val.x, val.y, CalibrateOptions(budget=Budget(latency_ms=latency_budget * c_full / 1000)),
                    data_name=val.name)
    t_cal = time.perf_counter() - t0
    bundle = load_bundle(bundle.root)
    _revalidate(bundle, model, val)

    test = load_data(f"{ds}:test").take(n_test)
    rt = Runtime(bundle)
    n_exits = rt.n_exits
    full = rt.run(test.x, no_early_exit=True, keep_logits=True)
    early = rt.run(test.x)
    c = measure_c(bundle, test.x, out / "harness")
    float_logits = torch_exit_logits(model, test.x)
    share = np.bincount(early.exit_idx, minlength=n_exits) / len(test)
    macs = np.cumsum([s.macs for s in bundle.manifest.stages])
    exits = [{"exit_idx": k, "cum_macs": int(macs[k]), "kept": bundle.manifest.exits[k].kept,
              "accuracy_float": float(np.mean(float_logits[k].argmax(1) == test.y)),
              "accuracy_int8": float(np.mean(full.exit_logits[k].argmax(1) == test.y)),
              "share_exiting": float(share[k]), "c_p50_us": float(prof["exits"][k]["latency_us"]["p50"])}
             for k in range(n_exits)]
    final_acc = exits[-1]["accuracy_int8"]
    early_acc = float(np.mean(early.class_idx == test.y))
    correct = np.stack([fl.argmax(1) == test.y for fl in full.exit_logits], 1)
    earliest = np.where(correct.any(1), correct.argmax(1), n_exits - 1)
    from eecompile.calibrate.costs import profile_costs

    lat = profile_costs(prof, "latency")
    report = {
        "model": model_name, "dataset": ds, "bundle": str(bundle.root), "n_test": len(test),
        "train_or_load_s": round(t_train, 2), "export_s": round(t_export, 2), "calibrate_s": round(t_cal, 2),
        "budget": cal["budget"]["spec"], "policy": cal["policy"], "thresholds": cal["rule"]["thresholds"],
        "kept": cal["rule"]["kept"], "calibrated_on": f"{val.name} ({len(val)} samples; figures on its held-out part)",
        "calibration_holdout": cal["holdout"], "exits": exits,
        "final_exit": {"accuracy": final_acc, "mean_latency_us": c["full"]["mean_latency_us"]},
        "early_exit": {"accuracy": early_acc, "mean_latency_us": c["early"]["mean_latency_us"],
                       "c_equals_python": bool(np.array_equal(c["early"]["class_idx"], early.class_idx))},
        "accuracy_gap_pts": 100 * (final_acc - early_acc),
        "latency_ratio": c["ratio"],
        "mac_ratio": float(macs[early.exit_idx].mean() / macs[-1]),
        "oracle": {"accuracy": float(correct.any(1).mean()), "modelled_latency_us": float(lat.oracle(earliest).mean()),
                   "latency_ratio": float(lat.oracle(earliest).mean() / lat.exit_cost[-1])},
        "profile": {"device": prof["device"]["id"], "model": prof["device"]["model"],
                    "p50_us": [e["latency_us"]["p50"] for e in prof["exits"]],
                    "stages_p50_us": [s["p50"] for s in prof["exits"][-1]["stages_us"]],
                    "load_ms": prof["load"]["t_load_ms"], "first_ms": prof["load"]["t_first_ms"],
                    "vm_hwm_kb": prof["memory"]["vm_hwm_kb"].get("done"),
                    "file": str(bundle.root / "profiles" / f"{prof['device']['id']}.json")},
        "validation": bundle.manifest.validation, "boundaries": bundle.manifest.boundaries,
        "frontier": cal["frontier"], "notes": cal["notes"],
    }
    report["android"] = android_step(bundle, out)
    from eecompile.report.plot import plot_tradeoff

    plot_tradeoff(report, out / "tradeoff.png")
    report["plot"] = str(out / "tradeoff.png")
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, default=float))
    return report


def android_step(bundle: Bundle, out: Path) -> dict:
    """The bundle into a fresh copy of the Android app; its JNI bridge run in a JVM here on the
    app's samples against the Python runtime; the APK built offline and verified. Skipped, with
    the reason, where a tool is missing (scripts/setup.sh installs them). Not run on a phone."""
    import shutil
    import tempfile

    from eecompile.android.apk import build_apk
    from eecompile.android.app import create_app, install_bundle
    from eecompile.android.hostcheck import host_check

    app = out / "android_app"
    shutil.rmtree(app, ignore_errors=True)
    create_app(app)
    inst = install_bundle(bundle.root, app)
    res: dict = {"app": str(app), "samples": inst.n_samples, "pareto_table": inst.calibrated}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            hc = host_check(app, bundle.root, Path(tmp))
        res["host_check"] = {"n": hc.n, "class_equal": hc.class_equal, "exit_equal": hc.exit_equal,
                             "logits_equal": hc.logits_equal, "exit_counts": hc.exit_counts,
                             "mean_us": round(hc.mean_us, 2), "ok": hc.ok}
        apk = build_apk(app, out / "eecompile-demo.apk")
        res["apk"] = {"file": str(apk.apk), "size_bytes": apk.size_bytes, "native_code": apk.native_code,
                      "min_sdk": apk.min_sdk, "assets_stored": apk.stored_assets, "litert_included": apk.litert_included}
    except ToolError as exc:
        res["skipped"] = f"{exc.message} ({exc.hint})"
    return res


def _revalidate(bundle: Bundle, model, val) -> None:
    """Validation redone at the calibrated rule (exit decisions agree with PyTorch's)."""
    report = validate_bundle(bundle, model, val.take(1000))
    bundle.manifest.validation = {**report.to_dict(), "data": f"{val.name} (1000 samples)"}
    bundle.save_manifest()
