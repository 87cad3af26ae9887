"""The C harness against the Python runtime: class and exit index agree on every sample and
the int8 logits agree bit for bit, at several policies and thresholds, on two architectures
(plus split heads). Also: every bad input gets a status (ee_test_errors), the harness runs
clean under ASan+UBSan, and bad bundle files give clear errors, never a crash."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from eecompile import Runtime
from eecompile.core.quant import dequantize, to_graph_input
from eecompile.harness import build_harness, find_litert_lib, generate_harness

from conftest import require_tools


@pytest.fixture(autouse=True)
def _tools():
    require_tools("cmake", "cc")

POLICIES = [("max-prob", "0.9"), ("max-prob", "0.6"), ("entropy", "0.15"), ("margin", "0.5"), ("patience", "1")]


def built(bundle, tmp: Path, sanitize: bool = False, packed: bool | None = None):
    src = generate_harness(bundle, tmp / "src", packed=packed)
    return build_harness(src, tmp / ("build-san" if sanitize else "build"), sanitize=sanitize)


@pytest.fixture(scope="module")
def lib():
    return str(find_litert_lib())


def run_c(exe: Path, bundle, x_q, lib: str, tmp: Path, *args: str, env=None, wrap=None):
    """Run ee_run (``wrap(exe, args)`` builds the command line, e.g. under qemu). ``x_q``: the
    model's input as raw graph input, or a list with one per model input (one file each)."""
    xs = list(x_q) if isinstance(x_q, (list, tuple)) else [x_q]
    files = [tmp / f"in{i}.bin" for i in range(len(xs))]
    for a, f in zip(xs, files):
        a.tofile(f)
    x_q = xs[0]
    dump = tmp / "logits.bin"
    argv = [str(bundle.root), ",".join(map(str, files)), "--litert", lib, "--json", "--dump-logits", str(dump), *args]
    cmd = wrap(exe, argv) if wrap else [str(exe), *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    n_exits, n_classes = bundle.manifest.n_exits, bundle.manifest.exits[0].n_classes
    logits = np.fromfile(dump, dtype=np.int8).reshape(len(x_q), n_exits, n_classes)
    return out, logits, proc.stderr


def check_parity(bundle, exe: Path, x, lib: str, tmp: Path, wrap=None) -> dict:
    """C and Python runtimes on ``x`` (one array, or a tuple with one per model input): every
    exit's int8 logits bit for bit, and every policy's exits and classes."""
    rt = Runtime(bundle)
    xs = x if isinstance(x, tuple) else (x,)
    x_q = [to_graph_input(a, spec) for a, spec in zip(xs, bundle.manifest.input, strict=True)]
    ref_all = rt.run(x, no_early_exit=True, keep_logits=True)
    out, logits, _ = run_c(exe, bundle, x_q, lib, tmp, "--all-exits", wrap=wrap)
    for k in range(bundle.manifest.n_exits):  # every exit's int8 logits, bit for bit
        spec = [t for t in bundle.manifest.stages[k].graphs[-1].outputs if t.role == "logits"][0]
        np.testing.assert_array_equal(dequantize(logits[:, k], spec.quant), ref_all.exit_logits[k])
    agree = {}
    for policy, t in POLICIES:
        ref = rt.run(x, policy=policy, thresholds=float(t))
        out, _, _ = run_c(exe, bundle, x_q, lib, tmp, "--policy", policy, "--thresholds", t, wrap=wrap)
        cls = np.array([s["class_idx"] for s in out["samples"]])
        ext = np.array([s["exit_idx"] for s in out["samples"]])
        np.testing.assert_array_equal(ext, ref.exit_idx, err_msg=f"{policy} {t}")
        np.testing.assert_array_equal(cls, ref.class_idx, err_msg=f"{policy} {t}")
        agree[(policy, t)] = np.bincount(ext, minlength=bundle.manifest.n_exits).tolist()
    return agree


def test_parity_dsnet_int8(int8_bundle, digits_data, lib, tmp_path):
    exe = built(int8_bundle, tmp_path).ee_run
    shares = check_parity(int8_bundle, exe, digits_data["test"].x, lib, tmp_path)
    assert any(s[0] > 0 and s[-1] > 0 for s in shares.values())  # the settings really exit at different depths


def test_parity_resnet_int8(resnet_bundle, digits_data, lib, tmp_path):
    exe = built(resnet_bundle, tmp_path).ee_run
    check_parity(resnet_bundle, exe, digits_data["test"].x, lib, tmp_path)


def test_packed_harness_needs_a_packed_file(int8_bundle, tmp_path):
    import copy

    from eecompile.errors import EecompileError
    from eecompile.harness.generate import render

    b = copy.deepcopy(int8_bundle)
    b.manifest.packed = None  # as a bundle exported with --no-pack
    with pytest.raises(EecompileError, match="has no packed stages file"):
        render(b, packed=True)
    assert '"stage0.tflite"' in render(b)[1]  # the default falls back to the stage files


def test_parity_per_stage_files(resnet_bundle, digits_data, lib, tmp_path):
    """The harness generated without the packed file opens every stage file as its own model."""
    src = generate_harness(resnet_bundle, tmp_path / "src", packed=False).joinpath("ee_bundle_gen.c").read_text()
    assert "stages.tflite" not in src and '"stage2.tflite"' in src
    exe = built(resnet_bundle, tmp_path, packed=False).ee_run
    check_parity(resnet_bundle, exe, digits_data["test"].x[:200], lib, tmp_path)


def test_parity_split_heads_and_requant(requant_bundle, digits_data, lib, tmp_path):
    """A bundle whose boundaries really need requantization (residual CNN, split heads,
    calibrated without range anchors: the consumer's input grid differs from the producer's
    output grid by about one int8 level), so both runtimes must apply it, and alike."""
    if requant_bundle is None:
        pytest.skip("none of 6 calibration sets gave this training of resnet-digits a boundary that needs "
                    "requantization (the grids coincided); the requantize arithmetic is not exercised in this run")
    rows = [r for r in requant_bundle.manifest.boundaries if r["requantize"]]
    assert rows and all(r["max_level_shift"] >= 0.5 for r in rows)
    inputs = [t for s in requant_bundle.manifest.stages for g in s.graphs for t in g.inputs if t.requant_from]
    assert len(inputs) >= len(rows)
    exe = built(requant_bundle, tmp_path).ee_run
    check_parity(requant_bundle, exe, digits_data["test"].x[:100], lib, tmp_path)


def test_f32_input_quantized_in_c_equals_raw(int8_bundle, digits_data, lib, tmp_path):
    exe = built(int8_bundle, tmp_path).ee_run
    x = digits_data["test"].x[:50]
    x_nhwc = np.ascontiguousarray(np.transpose(x, int8_bundle.manifest.input[0].perm_from_torch))
    out_f, logits_f, _ = run_c(exe, int8_bundle, x_nhwc.astype(np.float32), lib, tmp_path, "--f32", "--all-exits")
    out_q, logits_q, _ = run_c(exe, int8_bundle, to_graph_input(x, int8_bundle.manifest.input[0]), lib, tmp_path,
                               "--all-exits")
    np.testing.assert_array_equal(logits_f, logits_q)


def test_error_statuses(int8_bundle, lib, tmp_path):
    b = built(int8_bundle, tmp_path)
    proc = subprocess.run([str(b.test_errors), str(int8_bundle.root), lib], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith(", 0 failed")


def test_sanitizers_clean(int8_bundle, split_bundle, digits_data, lib, tmp_path):
    env = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1", "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
           "PATH": "/usr/bin:/bin"}
    for bundle in (int8_bundle, split_bundle):
        b = built(bundle, tmp_path / bundle.root.name, sanitize=True)
        proc = subprocess.run([str(b.test_errors), str(bundle.root), lib], capture_output=True, text=True, env=env)
        assert proc.returncode == 0 and "Sanitizer" not in proc.stderr and "runtime error" not in proc.stderr, \
            proc.stderr[-3000:]
        x_q = to_graph_input(digits_data["test"].x[:30], bundle.manifest.input[0])
        _, _, err = run_c(b.ee_run, bundle, x_q, lib, tmp_path, "--policy", "patience", "--thresholds", "1", env=env)
        assert "Sanitizer" not in err and "runtime error" not in err, err[-3000:]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing"])
@pytest.mark.parametrize("packed", [True, False])
def test_bad_stage_files_give_a_status(int8_bundle, lib, tmp_path, damage, packed):
    exe = built(int8_bundle, tmp_path / "b", packed=packed).ee_run
    copy = tmp_path / "bundle"
    shutil.copytree(int8_bundle.root, copy)
    f = copy / ("stages.tflite" if packed else "stage1.tflite")
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
    elif damage == "garbage":
        f.write_bytes(bytes(range(256)) * 8)
    else:
        f.unlink()
    x_q = np.zeros(int(np.prod(int8_bundle.manifest.input[0].shape)), np.int8)
    x_q.tofile(tmp_path / "in.bin")
    proc = subprocess.run([str(exe), str(copy), str(tmp_path / "in.bin"), "--litert", lib],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr  # a status, not a signal
    assert "cannot create session" in proc.stderr


def test_runner_rejects_bad_input_file(int8_bundle, lib, tmp_path):
    exe = built(int8_bundle, tmp_path).ee_run
    (tmp_path / "odd.bin").write_bytes(b"\0" * 65)
    proc = subprocess.run([str(exe), str(int8_bundle.root), str(tmp_path / "odd.bin"), "--litert", lib],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "not a whole number of 64-byte samples" in proc.stderr
    proc = subprocess.run([str(exe), str(int8_bundle.root), str(tmp_path / "odd.bin"), "--max-exit", "9"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--max-exit out of range" in proc.stderr


def test_fuzz_parsers_and_run_bounded(int8_bundle, lib, tmp_path):
    """libFuzzer (ASan+UBSan) over the runner's parsers, the input-file reader and
    ee_session_run_raw/ee_session_set_policy with arbitrary bytes, for a bounded time."""
    import os

    require_tools("clang")
    b = build_harness(generate_harness(int8_bundle, tmp_path / "src"), tmp_path / "fuzz", fuzz=True)
    seconds = os.environ.get("EE_FUZZ_SECONDS", "20")
    env = dict(os.environ, EE_FUZZ_BUNDLE=str(int8_bundle.root), EE_LITERT_LIB=lib)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    proc = subprocess.run([str(b.fuzz), f"-max_total_time={seconds}", "-rss_limit_mb=4096", str(corpus)],
                          capture_output=True, text=True, env=env, timeout=int(seconds) + 240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = int(proc.stderr.strip().splitlines()[-1].split()[1])  # "Done N runs in S second(s)"
    assert runs > 1000


def _calibrated_copy(bundle, tmp: Path, **changes):
    """A copy of ``bundle`` whose decision rule is set by hand (what eecompile calibrate writes)."""
    from eecompile import load_bundle

    copy = tmp / "calibrated"
    shutil.copytree(bundle.root, copy)
    b = load_bundle(copy)
    for e in b.manifest.exits:
        for k, v in changes.get("exits", {}).items():
            setattr(e, k, v[e.exit_idx])
    if "anytime" in changes:
        b.manifest.decision["anytime"] = changes["anytime"]
    b.save_manifest()
    return load_bundle(copy)


def test_parity_dropped_exits_learned_gate_and_deadline(int8_bundle, digits_data, lib, tmp_path):
    """The decision rule calibration writes -- a dropped exit (its trunk runs instead), the
    learned gate, the anytime table for deadlines -- runs the same in C and in Python."""
    gates = [[6.0, 2.0, -3.0, 1.5, -4.0], [4.0, 3.0, -2.0, 2.0, -3.5], None]
    b = _calibrated_copy(int8_bundle, tmp_path, exits={"policy": ["learned"] * 3, "threshold": [0.7, 0.6, 0.0],
                                                       "gate": gates, "kept": [False, True, True]},
                         anytime=[{"exit": 0, "p99_latency_us": 3.0}, {"exit": 1, "p99_latency_us": 6.0},
                                  {"exit": 2, "p99_latency_us": 9.0}])
    exe = built(b, tmp_path).ee_run
    x = digits_data["test"].x
    x_q = to_graph_input(x, b.manifest.input[0])
    rt = Runtime(b)
    ref = rt.run(x)
    assert (ref.exit_idx != 0).all() and (ref.exit_idx == 1).any()  # exit 0 dropped, the gate fires at 1
    out, logits, _ = run_c(exe, b, x_q, lib, tmp_path)
    np.testing.assert_array_equal([s["exit_idx"] for s in out["samples"]], ref.exit_idx)
    np.testing.assert_array_equal([s["class_idx"] for s in out["samples"]], ref.class_idx)
    assert not logits[:, 0].any()  # the dropped exit's head never ran
    for deadline, cap in ((5, 0), (7, 1), (100, 2)):  # the deepest exit whose p99 fits
        ref = rt.run(x, deadline_us=deadline)
        assert ref.exit_idx.max() <= cap
        out, _, _ = run_c(exe, b, x_q, lib, tmp_path, "--deadline-us", str(deadline))
        np.testing.assert_array_equal([s["exit_idx"] for s in out["samples"]], ref.exit_idx)


def test_a_harness_older_than_the_bundle_decision_is_refused(int8_bundle, digits_data, lib, tmp_path):
    b = _calibrated_copy(int8_bundle, tmp_path, exits={})
    exe = built(b, tmp_path).ee_run
    x_q = to_graph_input(digits_data["test"].x[:5], b.manifest.input[0])
    b.manifest.exits[0].threshold = 0.5  # re-calibrated after the harness was generated
    b.save_manifest()
    x_q.tofile(tmp_path / "in.bin")
    proc = subprocess.run([str(exe), str(b.root), str(tmp_path / "in.bin"), "--litert", lib], capture_output=True,
                          text=True)
    assert proc.returncode == 1 and "decision rule changed" in proc.stderr and "regenerate" in proc.stderr
    proc = subprocess.run([str(exe), str(b.root), str(tmp_path / "in.bin"), "--litert", lib, "--allow-stale"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "running the compiled-in rule" in proc.stderr
