"""Profiling the demo bundle (dsnet-fmnist, tflite-int8) on this machine, checked against the
harness benchmark in the same run.

Five rounds, each a fresh ``eecompile profile --device host`` process and a fresh ``ee_bench``
process (bench/bench_harness.py's measurement of the whole harness path, every exit evaluated),
interleaved so machine drift hits both alike. Checks (profiling issue):
- cumulative latency rises with exit depth;
- each exit's p50 agrees with the sum of its stages' p50 (plus its decisions) within 10%;
- the full path's p50 agrees within 5% with ee_bench's median harness time;
- the spread of each exit's p50 across the 5 profile processes is reported.

Usage: python3 bench/bench_profile.py [--rounds 5] [--out bench-out] [--reuse]
Exit status 1 when a check fails. Writes bench-out/profile_bench.json and the last profile's PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_harness import prepare  # bench/ is on sys.path when run as a script

from eecompile.harness import find_litert_lib


def profile_once(bundle: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "eecompile", "profile", str(bundle), "--device", "host",
                           "--runs", "2000", "--min-secs", "3", "--warmup", "200", "--energy", "off", "-o", str(out)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"eecompile profile failed: {proc.stderr[-2000:]}")
    return json.loads(out.read_text())


def bench_once(exe: Path, bundle: Path, mono: Path, lib: str) -> dict:
    proc = subprocess.run([str(exe), str(bundle), str(mono), "--litert", lib, "--iters", "4000", "--warmup", "400"],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--reuse", action="store_true", help="reuse the bundle of an earlier bench_harness run in --out")
    args = ap.parse_args()
    out = Path(args.out)
    bundle, mono, exe = prepare("dsnet-fmnist", out, args.reuse)
    lib = str(find_litert_lib())
    profiles, benches = [], []
    for r in range(args.rounds):
        profiles.append(profile_once(bundle.root, out / f"profile-{r}.json"))
        benches.append(bench_once(exe, bundle.root, mono, lib))
        print(f"round {r + 1}: profile full-path p50 {profiles[-1]['exits'][-1]['latency_us']['p50']:.2f} us, "
              f"ee_bench median {benches[-1]['median_harness_us']:.2f} us", flush=True)
    n_exits = len(profiles[0]["exits"])
    p50 = [[p["exits"][k]["latency_us"]["p50"] for p in profiles] for k in range(n_exits)]
    med = [statistics.median(v) for v in p50]
    checks = {"rises_with_depth": all(b > a for a, b in zip(med, med[1:]))}
    stage_gaps = []
    for k in range(n_exits):
        gaps = []
        for p in profiles:
            e = p["exits"][k]
            total = sum(s["p50"] for s in e["stages_us"]) + e["decision_us"]["p50"]
            gaps.append(abs(total - e["latency_us"]["p50"]) / e["latency_us"]["p50"])
        stage_gaps.append(max(gaps))
    checks["stages_sum_within_10pct"] = max(stage_gaps) <= 0.10
    bench_med = statistics.median(b["median_harness_us"] for b in benches)
    full_vs_bench = med[-1] / bench_med
    checks["full_path_within_5pct_of_bench"] = abs(full_vs_bench - 1) <= 0.05
    report = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores", "rounds": args.rounds,
        "bundle": str(bundle.root), "device": profiles[0]["device"]["id"],
        "p50_us_median": med, "p50_us_per_round": p50,
        "p50_spread": [{"exit": k, "min_us": min(v), "max_us": max(v), "rel_range": (max(v) - min(v)) / med[k]}
                       for k, v in enumerate(p50)],
        "stage_p50_us": [[s["p50"] for s in profiles[0]["exits"][k]["stages_us"]] for k in range(n_exits)],
        "max_stage_sum_gap": stage_gaps, "bench_median_harness_us": bench_med, "full_path_vs_bench": full_vs_bench,
        "load_ms": [p["load"]["t_load_ms"] for p in profiles], "first_ms": [p["load"]["t_first_ms"] for p in profiles],
        "vm_hwm_kb": [p["memory"]["vm_hwm_kb"].get("done") for p in profiles], "checks": checks,
    }
    (out / "profile_bench.json").write_text(json.dumps(report, indent=2))
    print(f"{'exit':>4} {'p50 us (median of rounds)':>26} {'spread':>18} {'stages p50 us':>28}")
    for k in range(n_exits):
        sp = report["p50_spread"][k]
        stages = " + ".join(f"{v:.1f}" for v in report["stage_p50_us"][k])
        print(f"{k:>4} {med[k]:>26.2f} {sp['min_us']:>8.1f}-{sp['max_us']:<8.1f} {stages:>28}")
    print(f"full path: profile p50 {med[-1]:.2f} us vs ee_bench median {bench_med:.2f} us ({full_vs_bench:.3f}x)")
    print(f"load {statistics.median(report['load_ms']):.2f} ms, first inference "
          f"{statistics.median(report['first_ms']):.3f} ms, VmHWM {statistics.median(report['vm_hwm_kb'])} kB")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
