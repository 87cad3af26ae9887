"""Benchmark of the core issue's expected figures on the Fashion-MNIST demo model.

Targets (from the core issue):
  - int8 accuracy within 1 point of float at every exit (test split);
  - early exit with the rule calibrated on validation data (under a mean latency of 0.6x
    the profiled full path): within 0.5 point of the final exit's test accuracy at <= 0.6x
    its mean latency (the C runner, interleaved in the same run);
  - export of all stages to tflite-int8 in under 60 s on 2 cores.
Timings are noisy on this machine: the latency ratio is measured on interleaved chunks.

Usage: python bench/bench_core.py [--model dsnet-fmnist] [--out bench-out]
Exit code 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import sys

from eecompile.report.demo import run_demo


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="dsnet-fmnist")
    ap.add_argument("--out", default="bench-out/demo")
    args = ap.parse_args()
    r = run_demo(args.model, args.out, quiet=True)
    drops = [100 * (e["accuracy_float"] - e["accuracy_int8"]) for e in r["exits"]]
    checks = [
        ("int8 vs float accuracy drop, worst exit (pts)", max(drops), 1.0),
        ("early-exit accuracy gap to final exit (pts)", r["accuracy_gap_pts"], 0.5),
        ("early-exit / final-exit mean latency", r["latency_ratio"], 0.6),
        ("export tflite-int8, all stages (s)", r["export_s"], 60.0),
    ]
    ok = True
    for name, value, limit in checks:
        good = value <= limit
        ok &= good
        print(f"{'PASS' if good else 'FAIL'}  {name:<48} {value:8.3f}  (<= {limit})")
    print(json.dumps({"policy": r["policy"], "thresholds": r["thresholds"], "kept": r["kept"], "exits": r["exits"],
                      "mac_ratio": r["mac_ratio"],
                      "final_exit": r["final_exit"], "early_exit": r["early_exit"]}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
