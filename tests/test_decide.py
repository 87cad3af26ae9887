"""The C decision maths (runtimes/c/src/ee_decide.c) on its own, without LiteRT: golden logits
and decisions written by the Python runtime's policies, checked by ee_test_decide. The int8
path (softmax by table look-up) on a real int8 bundle's raw exit logits, the float path on
an fp32 bundle's, at every policy."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from eecompile.bundle.graphs import StageExecutor
from eecompile.core.names import POLICY_INFO
from eecompile.core.policies import make_policy, simulate, softmax
from eecompile.core.quant import dequantize, to_graph_input
from eecompile.harness import build_harness, generate_harness

from conftest import require_tools

# the learned gate: weights of (max-prob, margin, entropy, agree) and a bias, per exit
GATES = [[6.0, 2.0, -3.0, 1.5, -4.0], [4.0, 3.0, -2.0, 2.0, -3.5], [0.0, 0.0, 0.0, 0.0, 0.0]]
CASES = [("max-prob", 0.9), ("max-prob", 0.6), ("entropy", 0.15), ("margin", 0.5), ("patience", 1.0),
         ("max-prob", 0.0), ("entropy", 1.0), ("learned", 0.7), ("learned", 0.4)]


def raw_exit_logits(bundle, x: np.ndarray) -> tuple[list[np.ndarray], list]:
    """Every exit's raw logits (int8 codes or floats) and their quant params, via the bundle's graphs."""
    ex = StageExecutor(bundle)
    state = [to_graph_input(x, spec) for spec in bundle.manifest.input]
    raw = []
    for k in range(bundle.manifest.n_exits):
        state, logits, _ = ex.run_stage(k, state)
        raw.append(logits)
    return raw, [ex.logits_specs[k].quant for k in range(bundle.manifest.n_exits)]


def write_golden(path: Path, raw: list[np.ndarray], quants: list) -> int:
    n, c = raw[0].shape
    deq = [dequantize(r, q) for r, q in zip(raw, quants)]
    lines = [f"{len(raw)} {c} {len(CASES)}"]
    for r, q in zip(raw, quants):
        lines.append(f"{9 if r.dtype == np.int8 else 1} {q.scale if q else 0.0!r} {q.zero_point if q else 0}")
    lines.append(str(n))
    for i in range(n):
        lines.append(" ".join(repr(float(v)) for r in raw for v in r[i]))
    for name, t in CASES:
        gates = GATES[: len(raw) - 1] + [GATES[-1]] if name == "learned" else None
        policy = make_policy(name, t, len(raw), gates=gates)
        exit_idx, pred, _ = simulate(policy, deq)
        conf = np.array([softmax(deq[e][i : i + 1]).max() for i, e in enumerate(exit_idx)])
        lines.append(f"{POLICY_INFO[name].c_code} " + " ".join(repr(v) for v in policy.thresholds))
        if gates is not None:
            lines.append(" ".join(repr(float(v)) for g in gates for v in g))
        lines += [f"{e} {p} {float(cf)!r}" for e, p, cf in zip(exit_idx, pred, conf)]
    path.write_text("\n".join(lines) + "\n")
    return n


@pytest.fixture(scope="module")
def decide_exe(int8_bundle, tmp_path_factory):
    require_tools("cmake", "cc")
    tmp = tmp_path_factory.mktemp("decide")
    return build_harness(generate_harness(int8_bundle, tmp / "src"), tmp / "build").build_dir / "ee_test_decide"


@pytest.mark.parametrize("which", ["int8", "fp32"])
def test_c_decisions_equal_python(which, decide_exe, int8_bundle, export_digits, digits_data, tmp_path):
    bundle = int8_bundle if which == "int8" else export_digits("tflite-fp32", tmp_path / "fp32", pack=False)
    raw, quants = raw_exit_logits(bundle, digits_data["test"].x)
    assert (raw[0].dtype == np.int8) == (which == "int8")
    n = write_golden(tmp_path / "golden.txt", raw, quants)
    proc = subprocess.run([str(decide_exe), str(tmp_path / "golden.txt")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(CASES)
    assert all(f"{n} samples: exit 0 wrong, class 0 wrong, confidence 0 off" in ln for ln in lines), proc.stdout


def test_c_decide_catches_a_wrong_golden(decide_exe, int8_bundle, digits_data, tmp_path):
    """The checker can fail: one flipped expected exit index is reported."""
    raw, quants = raw_exit_logits(int8_bundle, digits_data["test"].x[:40])
    write_golden(tmp_path / "golden.txt", raw, quants)
    lines = (tmp_path / "golden.txt").read_text().splitlines()
    first_case = 1 + len(raw) + 1 + 40  # header, per-exit formats, n, samples
    e, p, c = lines[first_case + 1].split()
    lines[first_case + 1] = f"{(int(e) + 1) % len(raw)} {p} {c}"
    (tmp_path / "golden.txt").write_text("\n".join(lines) + "\n")
    proc = subprocess.run([str(decide_exe), str(tmp_path / "golden.txt")], capture_output=True, text=True)
    assert proc.returncode == 1 and "exit 1 wrong" in proc.stdout.splitlines()[0]
