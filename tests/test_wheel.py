"""The package installs like a package: build the wheel, install it (not editable) into a fresh
venv, and from outside the source tree run export -> harness --build -> ee_run with it.

The venv is created with ``--system-site-packages`` so the pinned dependencies (torch,
TensorFlow, LiteRT: several GB) come from this machine's site-packages instead of being
downloaded again; eecompile itself is installed from the wheel into the venv, and the test
checks that the venv's copy is the one imported and that its C sources are the wheel's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import require_tools

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode == 0, f"{cmd[:3]}...: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_wheel_install_export_harness_run(tmp_path, digits_data):
    require_tools("cmake", "cc")
    _run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path / "dist")], tmp_path)
    (wheel,) = (tmp_path / "dist").glob("eecompile-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "eecompile/_csrc/include/ee.h" in names and "eecompile/_csrc/src/ee_session.c" in names
    assert "eecompile/android/bionic/libc.arm64.txt" in names

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], tmp_path)
    py, cli = venv / "bin" / "python", venv / "bin" / "eecompile"
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)], tmp_path)
    check = subprocess.run([str(py), "-m", "pip", "check"], capture_output=True, text=True, cwd=tmp_path)
    assert "eecompile" not in check.stdout, check.stdout  # every pinned dependency of eecompile is satisfied
    work = tmp_path / "elsewhere"  # not the source tree: nothing can come from the checkout
    work.mkdir()
    where = _run([str(py), "-c", "import eecompile, eecompile.harness.generate as g; "
                                 "print(eecompile.__file__); print(g.c_sources())"], work).stdout.split()
    assert all(str(venv) in w for w in where), where

    _run([str(cli), "export", "dsnet-digits", "-c", "digits:train:256", "-o", "bundle"], work)
    _run([str(cli), "harness", "bundle", "-o", "c", "--build"], work)
    x = digits_data["test"].x[:20]
    np.save(work / "x.npy", np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    lib = _run([str(py), "-c", "from eecompile.harness import find_litert_lib; print(find_litert_lib())"],
               work).stdout.strip()
    out = json.loads(_run([str(work / "c" / "build-host" / "ee_run"), "bundle", "x.npy", "--litert", lib, "--json"],
                          work).stdout)
    assert out["summary"]["n"] == 20 and out["summary"]["input"] == "npy float32"
    acc = np.mean([s["class_idx"] for s in out["samples"]] == digits_data["test"].y[:20])
    assert acc >= 0.8

    # the Android app template ships in the wheel: a new app from it, and the bundle put in it
    assert "eecompile/_app/app/src/main/cpp/ee_jni.c" in names and "eecompile/_app/eecompile-app.json" in names
    assert "eecompile/_app/app/src/main/java/dev/eecompile/EeHarness.java" in names
    assert {"eecompile/_app/app/src/main/res/values/strings.xml", "eecompile/_app/app/src/main/AndroidManifest.xml",
            "eecompile/_app/app/src/main/cpp/CMakeLists.txt", "eecompile/_app/app/build.gradle"} <= set(names)
    assert "eecompile/android/java/HostRun.java" in names
    res = _run([str(cli), "bundle", "bundle", "--android", "app", "--create"], work)
    assert "created the app at app" in res.stdout
    assert (work / "app/app/src/main/assets/eecompile/bundle/stages.tflite").is_file()
    assert (work / "app/app/src/main/cpp/harness/ee_bundle_gen.c").is_file()
