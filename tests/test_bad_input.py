"""Bad input never ends in a traceback: one table of named cases drives every command of the
real CLI (a separate process each, as a user runs it) and the C runner ``ee_run``.

For every case: the exit status is 1 (2 for a usage error, 130 for Ctrl-C), the output names
what is wrong and what to do (the expected text, and a hint for typed errors), there is no
traceback, and nothing half-written is left at the destination (a path that did not exist
still does not; one that did is unchanged; no ``.partial`` staging directory remains).
The README quotes the number of cases (``len(CASES)``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from conftest import require_tools


@dataclass
class Case:
    name: str
    argv: Callable[["Ctx"], list[str]]  # eecompile arguments, or ["@ee_run", ...] for the C runner
    status: int
    expect: tuple[str, ...]  # substrings of the output (stderr + stdout)
    dest: Callable[["Ctx"], Path] | None = None  # where nothing may be half-written
    hint: bool = True  # typed errors carry "hint:"


@dataclass
class Ctx:
    tmp: Path
    int8: Path
    onnx: Path
    ee_run: Path
    lib: str
    files: dict[str, Path] = field(default_factory=dict)

    def f(self, name: str) -> str:
        return str(self.files[name])


def _npy(path: Path, arr: np.ndarray) -> Path:
    np.save(path, arr)
    return path


def _make_files(tmp: Path, int8: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    x = rng.random((200, 1, 8, 8), dtype=np.float32)
    files = {
        "text.npy": tmp / "text.npy", "model.txt": tmp / "model.txt", "exists": tmp / "exists",
        "foreign": tmp / "foreign", "bundle_copy": tmp / "bundle_copy",
        "wrong_shape.npy": _npy(tmp / "wrong_shape.npy", rng.random((200, 3, 8, 8), dtype=np.float32)),
        "nhwc.npy": _npy(tmp / "nhwc.npy", x.transpose(0, 2, 3, 1).copy()),
        "uint8.npy": _npy(tmp / "uint8.npy", (x * 255).astype(np.uint8)),
        "empty.npy": _npy(tmp / "empty.npy", x[:0]),
        "small.npy": _npy(tmp / "small.npy", x[:64]),
        "nan.npy": _npy(tmp / "nan.npy", np.where(np.arange(200)[:, None, None, None] == 7, np.nan, x)),
        "f64_nhwc.npy": _npy(tmp / "f64_nhwc.npy", x.transpose(0, 2, 3, 1).astype(np.float64)),
        "nchw_ee.npy": _npy(tmp / "nchw_ee.npy", x[:4]),
    }
    files["text.npy"].write_text("0.1 0.2 0.3\n")
    files["model.txt"].write_text("def build(): pass\n")
    files["exists"].write_text("not a directory\n")
    files["foreign"].mkdir()
    (files["foreign"] / "notes.txt").write_text("keep me\n")
    good = _npy(tmp / "good.npy", x)
    files["truncated.npy"] = tmp / "truncated.npy"
    files["truncated.npy"].write_bytes(good.read_bytes()[:3000])
    files["nhwc_ee.npy"] = _npy(tmp / "nhwc_ee.npy", x[:4].transpose(0, 2, 3, 1).copy())
    files["trunc_ee.npy"] = tmp / "trunc_ee.npy"
    files["trunc_ee.npy"].write_bytes(files["nhwc_ee.npy"].read_bytes()[:-10])
    files["odd.bin"] = tmp / "odd.bin"
    files["odd.bin"].write_bytes(b"\0" * 65)
    nan = x[:2].transpose(0, 2, 3, 1).copy()
    nan[1, 0, 0, 0] = np.nan
    files["nan_ee.npy"] = _npy(tmp / "nan_ee.npy", nan)
    (tmp / "raises.py").write_text("def build():\n    raise RuntimeError('weights file gone')\n")
    (tmp / "notmodel.py").write_text("import torch\ndef build():\n    return torch.nn.Linear(2, 2)\n")
    # damaged copies of a good bundle
    for name, damage in [("corrupt_stage", "stage"), ("corrupt_packed", "packed"), ("bad_json", "json"),
                         ("newer_schema", "schema"), ("missing_stage", "missing")]:
        d = tmp / name
        shutil.copytree(int8, d)
        files[name] = d
        if damage in ("stage", "packed"):
            f = d / ("stage1.tflite" if damage == "stage" else "stages.tflite")
            data = bytearray(f.read_bytes())
            data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
            f.write_bytes(bytes(data))
        elif damage == "json":
            m = d / "manifest.json"
            m.write_text(m.read_text()[:200])
        elif damage == "schema":
            m = d / "manifest.json"
            raw = json.loads(m.read_text())
            raw["schema_version"] = 99
            m.write_text(json.dumps(raw))
        else:
            (d / "stage2.tflite").unlink()
    files["not_bundle"] = tmp / "not_bundle"
    files["not_bundle"].mkdir()
    files["harness_dir"] = tmp / "harness_dir"
    files["harness_dir"].mkdir()
    (files["harness_dir"] / "main.c").write_text("int main(void) { return 0; }\n")
    return files


OUT = lambda c: c.tmp / "out"  # noqa: E731  a destination that does not exist
EXPORT = ["export", "dsnet-digits", "-o"]
CASES = [
    # ---- export ----
    Case("export: model file missing", lambda c: ["export", str(c.tmp / "nope.py") + ":build", "-c", "digits", "-o",
                                                  str(OUT(c))], 1, ("does not exist",), OUT),
    Case("export: model file not Python", lambda c: ["export", c.f("model.txt") + ":build", "-c", "digits", "-o",
                                                     str(OUT(c))], 1, ("not a Python file",), OUT),
    Case("export: unknown zoo name", lambda c: ["export", "vibes-net", "-c", "digits", "-o", str(OUT(c))], 1,
         ("is not a zoo model", "dsnet-digits"), OUT),
    Case("export: factory raises", lambda c: ["export", str(c.tmp / "raises.py") + ":build", "-c", "digits", "-o",
                                              str(OUT(c))], 1, ("raised RuntimeError: weights file gone",), OUT),
    Case("export: factory returns a plain module", lambda c: ["export", str(c.tmp / "notmodel.py") + ":build", "-c",
                                                              "digits", "-o", str(OUT(c))], 1,
         ("not an EarlyExitModel",), OUT),
    Case("export: unknown dataset", lambda c: EXPORT + [str(OUT(c)), "-c", "mnist:train"], 1, ("unknown dataset",),
         OUT),
    Case("export: unknown split", lambda c: EXPORT + [str(OUT(c)), "-c", "digits:nope"], 1, ("unknown split",), OUT),
    Case("export: calibration file missing", lambda c: EXPORT + [str(OUT(c)), "-c", str(c.tmp / "missing.npy")], 1,
         ("does not exist",), OUT),
    Case("export: text file given as .npy", lambda c: EXPORT + [str(OUT(c)), "-c", c.f("text.npy")], 1,
         ("is not a .npy file",), OUT),
    Case("export: truncated .npy", lambda c: EXPORT + [str(OUT(c)), "-c", c.f("truncated.npy")], 1,
         ("cannot read",), OUT),
    Case("export: calibration of the wrong shape", lambda c: EXPORT + [str(OUT(c)), "-c", c.f("wrong_shape.npy")], 1,
         ("does not match the model input", "each sample must have shape (1, 8, 8)"), OUT),
    Case("export: NHWC calibration data", lambda c: EXPORT + [str(OUT(c)), "-c", c.f("nhwc.npy")], 1,
         ("does not match the model input", "transpose"), OUT),
    Case("export: uint8 calibration data", lambda c: EXPORT + [str(OUT(c)), "-c", c.f("uint8.npy")], 1,
         ("dtype uint8, expected float32",), OUT),
    Case("export: NaN in calibration data", lambda c: EXPORT + [str(OUT(c)), "-c", c.f("nan.npy")], 1,
         ("1 sample(s) contain NaN or inf",), OUT),
    Case("export: empty calibration data", lambda c: EXPORT + [str(OUT(c)), "-c", c.f("empty.npy")], 1,
         ("the batch is empty",), OUT),
    Case("export: too few samples to hold out validation", lambda c: EXPORT + [str(OUT(c)), "-c", c.f("small.npy")],
         1, ("cannot give 100 for validation", "--val-data"), OUT),
    Case("export: validation data too small", lambda c: EXPORT + [str(OUT(c)), "-c", "digits:train:256",
                                                                  "--val-data", "digits:val:20"], 1,
         ("validation data has 20 samples", "--val-data"), OUT),
    Case("export: threshold out of range", lambda c: EXPORT + [str(OUT(c)), "-c", "digits", "--threshold", "1.5"], 1,
         ("threshold 1.5 out of range for policy max-prob",), OUT),
    Case("export: more thresholds than exits", lambda c: EXPORT + [str(OUT(c)), "-c", "digits", "--threshold",
                                                                   "0.9,0.8,0.7,0.6"], 1,
         ("4 thresholds for 3 exits",), OUT),
    Case("export: unknown target", lambda c: EXPORT + [str(OUT(c)), "-c", "digits", "--target", "tflite-int4"], 2,
         ("Invalid value for '--target'",), OUT, hint=False),
    Case("export: output is a file", lambda c: EXPORT + [c.f("exists"), "-c", "digits", "--force"], 1,
         ("exists and is not a directory",), lambda c: c.files["exists"]),
    Case("export: output is a foreign directory", lambda c: EXPORT + [c.f("foreign"), "-c", "digits", "--force"], 1,
         ("not a bundle", "--force replaces only bundles"), lambda c: c.files["foreign"]),
    Case("export: output exists, no --force", lambda c: EXPORT + [str(c.int8), "-c", "digits"], 1,
         ("already exists", "--force"), lambda c: c.int8),
    # ---- validate ----
    Case("validate: no bundle there", lambda c: ["validate", str(c.tmp / "nowhere"), "--data", "digits:test"], 1,
         ("is not a bundle directory",)),
    Case("validate: reference model of another architecture",
         lambda c: ["validate", str(c.int8), "--data", "digits:test", "--model", "resnet-digits"], 1,
         ("is not the model of bundle", "pass --model")),
    Case("validate: too few samples", lambda c: ["validate", str(c.int8), "--data", "digits:test:20"], 1,
         ("validation data has 20 samples", "pass --data")),
    Case("validate: backend that cannot run the bundle",
         lambda c: ["validate", str(c.int8), "--data", "digits:test", "--backend", "onnxruntime"], 1,
         ("cannot run a tflite-int8 bundle",)),
    Case("validate: retired tflite-runtime backend",
         lambda c: ["validate", str(c.int8), "--data", "digits:test", "--backend", "tflite-runtime"], 1,
         ("no longer offered", "numpy 2")),
    # ---- run ----
    Case("run: --threads 0", lambda c: ["run", str(c.int8), "-i", "digits:test:4", "--threads", "0"], 2,
         ("Invalid value for '--threads'",), hint=False),
    Case("run: --max-exit past the last exit", lambda c: ["run", str(c.int8), "-i", "digits:test:4", "--max-exit",
                                                          "7"], 1, ("max_exit 7 out of range", "0..2")),
    Case("run: unknown policy", lambda c: ["run", str(c.int8), "-i", "digits:test:4", "--policy", "vibes"], 2,
         ("Invalid value for '--policy'",), hint=False),
    Case("run: fractional patience", lambda c: ["run", str(c.int8), "-i", "digits:test:4", "--policy", "patience",
                                                "--threshold", "1.5"], 1, ("whole numbers",)),
    Case("run: NaN threshold", lambda c: ["run", str(c.int8), "-i", "digits:test:4", "--threshold", "nan"], 1,
         ("out of range",)),
    Case("run: input of the wrong shape", lambda c: ["run", str(c.int8), "-i", c.f("wrong_shape.npy")], 1,
         ("does not match the model input", "each sample must have shape")),
    Case("run: corrupt stage file", lambda c: ["run", c.f("corrupt_stage"), "-i", "digits:test:4"], 1,
         ("fails its sha256 check", "re-export")),
    Case("run: truncated manifest", lambda c: ["run", c.f("bad_json"), "-i", "digits:test:4"], 1,
         ("is not valid JSON",)),
    Case("run: manifest from a newer schema", lambda c: ["run", c.f("newer_schema"), "-i", "digits:test:4"], 1,
         ("schema version 99",)),
    # ---- info ----
    Case("info: directory without a manifest", lambda c: ["info", c.f("not_bundle")], 1, ("has no manifest.json",)),
    Case("info: stage file missing", lambda c: ["info", c.f("missing_stage")], 1,
         ("stage2.tflite is missing",)),
    # ---- harness ----
    Case("harness: ONNX bundle", lambda c: ["harness", str(c.onnx), "-o", str(OUT(c))], 1,
         ("runs TFLite bundles",), OUT),
    Case("harness: output is a non-empty foreign directory",
         lambda c: ["harness", str(c.int8), "-o", c.f("harness_dir"), "--force"], 1,
         ("not a generated harness",), lambda c: c.files["harness_dir"]),
    Case("harness: output is a file", lambda c: ["harness", str(c.int8), "-o", c.f("exists")], 1,
         ("exists and is not a directory",), lambda c: c.files["exists"]),
    # ---- profile ----
    Case("profile: no device", lambda c: ["profile", str(c.int8)], 1, ("no device to profile", "--device host")),
    Case("profile: unknown device", lambda c: ["profile", str(c.int8), "--device", "phone"], 1,
         ("unknown device 'phone'",)),
    Case("profile: --runs 0", lambda c: ["profile", str(c.int8), "--device", "host", "--runs", "0"], 1,
         ("--runs 0",)),
    Case("profile: negative --power-w", lambda c: ["profile", str(c.int8), "--device", "host", "--power-w", "-2"], 1,
         ("--power-w -2.0 is not a positive power",)),
    Case("profile: malformed ssh device", lambda c: ["profile", str(c.int8), "--device", "ssh:board"], 1,
         ("is not ssh:USER@HOST[:PORT]",)),
    Case("profile: not a bundle", lambda c: ["profile", c.f("not_bundle"), "--device", "host"], 1,
         ("has no manifest.json",)),
    # ---- calibrate ----
    Case("calibrate: budget syntax", lambda c: ["calibrate", str(c.int8), "--data", "digits:test", "--budget",
                                               "latency-ms"], 1, ("is not KEY=VALUE",)),
    Case("calibrate: data without labels", lambda c: ["calibrate", str(c.int8), "--data", c.f("small.npy"),
                                                      "--budget", "accuracy-drop=1"], 1, ("has no labels",)),
    Case("calibrate: an exit the bundle lacks", lambda c: ["calibrate", str(c.int8), "--data", "digits:test",
                                                           "--budget", "accuracy-drop=1", "--exits", "0,7"], 1,
         ("names exit 7, the bundle has exits 0..2",)),
    Case("calibrate: too few samples for the guarantee", lambda c: ["calibrate", str(c.int8), "--data", "digits:test",
                                                                    "--budget", "accuracy-drop=1", "--guarantee",
                                                                    "0.01"], 1,
         ("too few for --guarantee 0.01 --delta 0.1: at least 230 are needed",)),
    Case("calibrate: device budget without a profile", lambda c: ["calibrate", str(c.int8), "--data", "digits:test",
                                                                  "--budget", "latency-ms=1", "--cost", "macs"], 1,
         ("there is no device profile", "eecompile profile")),
    # ---- bundle --android, harness --arch android-arm64 ----
    Case("bundle: target is not the app", lambda c: ["bundle", str(c.int8), "--android", c.f("foreign")], 1,
         ("is not the eecompile Android app", "--create"), lambda c: c.files["foreign"]),
    Case("bundle: corrupt bundle", lambda c: ["bundle", c.f("corrupt_packed"), "--android", str(OUT(c)), "--create"],
         1, ("stages.tflite",), OUT),
    Case("bundle: ONNX bundle", lambda c: ["bundle", str(c.onnx), "--android", str(OUT(c)), "--create"], 1,
         ("the app runs TFLite bundles",), OUT),
    Case("bundle: --create into a non-empty directory", lambda c: ["bundle", str(c.int8), "--android", c.f("foreign"),
                                                                  "--create"], 1,
         ("is not an empty directory",), lambda c: c.files["foreign"]),
    Case("bundle: --litert without --apk", lambda c: ["bundle", str(c.int8), "--android", str(OUT(c)), "--create",
                                                      "--litert", c.f("model.txt")], 1, ("--litert goes into the APK",),
         OUT),
    Case("harness: --sanitize for android-arm64", lambda c: ["harness", str(c.int8), "-o", str(OUT(c)), "--arch",
                                                             "android-arm64", "--sanitize", "--build"], 1,
         ("--sanitize is for host builds",), OUT),
    Case("harness: --min-sdk for the host", lambda c: ["harness", str(c.int8), "-o", str(OUT(c)), "--min-sdk", "24"],
         1, ("--min-sdk applies to --arch android-arm64",), OUT),
    # ---- demo, train ----
    Case("demo: unknown model", lambda c: ["demo", "--model", "nope", "--out", str(OUT(c))], 2,
         ("Invalid value for '--model'",), OUT, hint=False),
    Case("demo: output is a foreign directory", lambda c: ["demo", "--model", "dsnet-digits", "--out",
                                                           c.f("foreign")], 1,
         ("holds files that are not the demo's",), lambda c: c.files["foreign"]),
    Case("demo: latency budget of 0", lambda c: ["demo", "--model", "dsnet-digits", "--latency-budget", "0", "--out",
                                                 str(OUT(c))], 1, ("latency budget 0.0",), OUT),
    Case("train: unknown model", lambda c: ["train", "nope"], 2, ("Invalid value for 'MODEL'",), hint=False),
    # ---- the C runner ----
    Case("ee_run: unknown option", lambda c: ["@ee_run", str(c.int8), c.f("nhwc_ee.npy"), "--bogus"], 2,
         ("unknown option: --bogus",), hint=False),
    Case("ee_run: input file missing", lambda c: ["@ee_run", str(c.int8), str(c.tmp / "none.npy")], 1,
         ("cannot open",), hint=False),
    Case("ee_run: raw file of the wrong size", lambda c: ["@ee_run", str(c.int8), c.f("odd.bin")], 1,
         ("not a whole number of 64-byte samples", "give a .npy file"), hint=False),
    Case("ee_run: .npy in NCHW", lambda c: ["@ee_run", str(c.int8), c.f("nchw_ee.npy")], 1,
         ("shape (4, 1, 8, 8), but the model takes (N, 8, 8, 1)", "transpose"), hint=False),
    Case("ee_run: .npy of float64", lambda c: ["@ee_run", str(c.int8), c.f("f64_nhwc.npy")], 1,
         ("dtype <f8; give float32",), hint=False),
    Case("ee_run: truncated .npy", lambda c: ["@ee_run", str(c.int8), c.f("trunc_ee.npy")], 1,
         ("truncated: its header promises 4 samples",), hint=False),
    Case("ee_run: NaN input", lambda c: ["@ee_run", str(c.int8), c.f("nan_ee.npy")], 1,
         ("NaN or inf",), hint=False),
    Case("ee_run: libLiteRt.so missing", lambda c: ["@ee_run", str(c.int8), c.f("nhwc_ee.npy"), "--litert",
                                                     "/nonexistent/libLiteRt.so"], 1,
         ("not found or not loadable", "--litert PATH"), hint=False),
    Case("ee_run: threshold out of range", lambda c: ["@ee_run", str(c.int8), c.f("nhwc_ee.npy"), "--thresholds",
                                                       "1.5"], 1, ("thresholds rejected", "[0, 1]"), hint=False),
    Case("ee_run: --max-exit past the last exit", lambda c: ["@ee_run", str(c.int8), c.f("nhwc_ee.npy"),
                                                              "--max-exit", "5"], 2, ("--max-exit out of range",),
         hint=False),
    Case("ee_run: corrupt packed model file", lambda c: ["@ee_run", c.f("corrupt_packed"), c.f("nhwc_ee.npy")], 1,
         ("fails its checksum", "cannot create session"), hint=False),
]


@pytest.fixture(scope="module")
def ctx(int8_bundle, onnx_bundle, tmp_path_factory) -> Ctx:
    require_tools("cmake", "cc")
    from eecompile.harness import build_harness, find_litert_lib, generate_harness

    tmp = tmp_path_factory.mktemp("bad")
    exe = build_harness(generate_harness(int8_bundle, tmp / "c"), tmp / "c" / "build").ee_run
    return Ctx(tmp=tmp, int8=int8_bundle.root, onnx=onnx_bundle.root, ee_run=exe, lib=str(find_litert_lib()),
               files=_make_files(tmp, int8_bundle.root))


def _snapshot(path: Path) -> object:
    if not path.exists():
        return None
    if path.is_file():
        return path.read_bytes()
    return sorted((str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*"))


def _command(c: Ctx, argv: list[str]) -> list[str]:
    if argv[0] == "@ee_run":
        extra = [] if "--litert" in argv else ["--litert", c.lib]
        return [str(c.ee_run), *argv[1:], *extra]
    return [sys.executable, "-m", "eecompile", *argv]


def _check_output(case_name: str, out: str, status: int, hint: bool, expect: tuple[str, ...]) -> None:
    assert "Traceback" not in out, f"{case_name}: traceback\n{out}"
    for text in expect:
        assert text in out, f"{case_name}: expected {text!r} in\n{out}"
    if status == 1 and hint:
        n_errors = sum(line.startswith("Error: ") for line in out.splitlines())
        assert n_errors == 1 and "  hint: " in out, f"{case_name}: one message with a hint\n{out}"


def test_the_table_has_at_least_30_cases_across_every_command():
    assert len(CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)
    commands = {c.name.split(":")[0] for c in CASES}
    assert commands >= {"export", "validate", "run", "info", "harness", "profile", "calibrate", "demo", "train",
                        "ee_run"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, ctx: Ctx):
    dest = case.dest(ctx) if case.dest else None
    before = _snapshot(dest) if dest else None
    t0 = time.monotonic()
    proc = subprocess.run(_command(ctx, case.argv(ctx)), capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})
    out = proc.stderr + proc.stdout
    assert proc.returncode == case.status, f"{case.name}: exit {proc.returncode}, want {case.status}\n{out}"
    _check_output(case.name, out, case.status, case.hint, case.expect)
    if dest is not None:
        assert _snapshot(dest) == before, f"{case.name}: {dest} changed"
        assert not list(dest.absolute().parent.glob(f".{dest.name}.*partial")), f"{case.name}: staging left behind"
    assert time.monotonic() - t0 < 120, f"{case.name}: a bad input must fail fast, not after training"


def test_sigint_during_export_stops_it_and_writes_nothing(ctx: Ctx):
    """One Ctrl-C stops an export whenever it comes, even inside the converter (which swallows
    KeyboardInterrupt in about 1 export of 4 without the guard): exit 130, nothing at -o."""
    outcomes = []
    for i, delay in enumerate((0.5, 1.5, 3.0)):  # seconds after stage conversion starts
        out = ctx.tmp / f"sigint{i}"
        proc = subprocess.Popen([sys.executable, "-m", "eecompile", *EXPORT, str(out), "-c", "digits:train:256"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not list(ctx.tmp.glob(f".sigint{i}.*partial")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
        outcomes.append((delay, proc.returncode))
        assert proc.returncode == 130, f"SIGINT {delay}s into conversion: exit {proc.returncode}\n{stderr}"
        _check_output("export: SIGINT", stderr + stdout, 130, False, ("Interrupted",))
        assert not out.exists() and not list(ctx.tmp.glob(f".sigint{i}.*")), "a half-written bundle was left"
    assert len(outcomes) == 3
