"""Start-up time of the command line: ``eecompile --help``, ``zoo``, ``info`` and ``harness``
(generation only), each a fresh process, median of --runs. Target (hardening issue): < 0.3 s.

With ``--compare-ref REF`` the same commands also run from a git worktree of REF (e.g. the
commit before the lazy imports), interleaved run by run with the current tree, so machine
drift hits both alike.

Usage: python3 bench/bench_cli_startup.py [--runs 15] [--compare-ref 1c09bde] [--out bench-out]
Exit status 1 when a command misses the target.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 0.3


def commands(bundle: Path, tmp: Path) -> dict[str, list[str]]:
    return {"--help": ["--help"], "zoo": ["zoo"], "info": ["info", str(bundle)],
            "harness": ["harness", str(bundle), "-o", str(tmp / "c")]}


def time_once(tree: Path, args: list[str], tmp: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    if args[0] == "harness":  # each run generates a fresh directory (the old CLI has no --force)
        subprocess.run(["rm", "-rf", args[3]], check=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "eecompile.cli", *args], env=env, cwd=tmp, capture_output=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: eecompile {' '.join(args)} failed: {proc.stderr.decode()[-500:]}")
    return elapsed


def make_bundle(tmp: Path) -> Path:
    out = tmp / "bundle"
    subprocess.run([sys.executable, "-m", "eecompile", "export", "dsnet-digits", "-c", "digits:train:256", "-o",
                    str(out)], check=True, capture_output=True, cwd=ROOT)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--compare-ref", help="a git ref to time alongside the current tree")
    ap.add_argument("--out", default="bench-out")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="eecompile-startup-"))
    trees = {"current": ROOT}
    if args.compare_ref:
        ref_tree = tmp / "ref"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(ref_tree), args.compare_ref],
                       check=True, capture_output=True)
        trees[args.compare_ref] = ref_tree
    try:
        bundle = make_bundle(tmp)
        cmds = commands(bundle, tmp)
        times: dict[str, dict[str, list[float]]] = {t: {c: [] for c in cmds} for t in trees}
        for _ in range(args.runs):
            for name, argv in cmds.items():
                for tree_name, tree in trees.items():  # interleaved: drift hits every tree alike
                    times[tree_name][name].append(time_once(tree, argv, tmp))
    finally:
        if args.compare_ref:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "ref")],
                           capture_output=True)
    report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores", "runs": args.runs,
              "target_s": TARGET_S, "median_s": {t: {c: round(statistics.median(v), 3) for c, v in d.items()}
                                                 for t, d in times.items()}}
    ok = True
    print(f"{'command':<10}" + "".join(f"{t:>14}" for t in trees))
    for c in cmds:
        print(f"{c:<10}" + "".join(f"{report['median_s'][t][c]:>13.3f}s" for t in trees))
        ok &= report["median_s"]["current"][c] < TARGET_S
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cli_startup.json").write_text(json.dumps(report, indent=2))
    print("PASS" if ok else f"FAIL: a command takes >= {TARGET_S} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
