"""The Android deployment, as far as this machine can take it (no phone, no emulator, no NDK):

- ``eecompile bundle --android``: copies, is idempotent, refuses what it must (nothing written);
- the JNI bridge (the app's ee_jni.c and EeHarness.java) built for the host and driven from a
  plain JVM with the host's libLiteRt.so: class, exit and int8 logits equal to the Python
  runtime's and the C runner's on the samples the app ships, with the bundle's calibrated rule
  (a dropped exit, run on its trunk) and with a rule set through the bridge;
- the arm64 runner and JNI library cross-built with clang for Android and symbol-checked
  against bionic; a glibc-only symbol stops the build;
- the offline APK: built, signed, ``apksigner verify``, ``aapt dump badging`` (arm64-v8a), the
  assets stored uncompressed, the library in it passing the check. Not run on a phone.
- profiling an Android device refuses Linux (glibc) builds before anything is pushed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import require_tools

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "android_demo"


def cli(*args, env=None) -> subprocess.CompletedProcess:
    import os
    import sys

    return subprocess.run([sys.executable, "-m", "eecompile", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=900)


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def app(tmp_path) -> Path:
    dst = tmp_path / "app"
    shutil.copytree(APP, dst, ignore=shutil.ignore_patterns("assets", "harness", "build", ".cxx", ".gradle"))
    return dst


@pytest.fixture(scope="module")
def calibrated(int8_bundle, digits_data, tmp_path_factory):
    """The digits bundle calibrated under an accuracy budget with exit 0 forced out: a rule
    with a dropped exit (its trunk runs), written into the bundle and its generated C."""
    from eecompile import load_bundle
    from eecompile.calibrate.budget import Budget
    from eecompile.calibrate.calibrate import CalibrateOptions, calibrate

    dst = tmp_path_factory.mktemp("android") / "bundle"
    shutil.copytree(int8_bundle.root, dst)
    b = load_bundle(dst)
    test = digits_data["test"]
    calibrate(b, test.x, test.y, CalibrateOptions(budget=Budget(accuracy_drop_pts=2.0), policy="max-prob",
                                                  exits="1,2", cost="macs"), data_name=test.name)
    b = load_bundle(dst)
    assert [e.kept for e in b.manifest.exits] == [False, True, True]
    return b


# ---- eecompile bundle --android ----------------------------------------------------------

def test_bundle_into_the_app_copies_and_is_idempotent(calibrated, app):
    from eecompile.android.app import install_bundle

    first = install_bundle(calibrated.root, app, n_samples=20)
    assets = app / "app/src/main/assets/eecompile"
    got = {p.relative_to(assets).as_posix() for p in assets.rglob("*") if p.is_file()}
    assert got == {"bundle/manifest.json", "bundle/decision.hash", "bundle/stages.tflite", "samples.bin",
                   "samples.json", "pareto.json", "stamp.txt"}
    assert (assets / "bundle/stages.tflite").read_bytes() == (calibrated.root / "stages.tflite").read_bytes()
    meta = json.loads((assets / "samples.json").read_text())
    assert meta["n"] == first.n_samples == 20 and (assets / "samples.bin").stat().st_size == 20 * meta["input_bytes"]
    assert len(set(meta["labels"])) == 10  # round-robin over the classes
    pareto = json.loads((assets / "pareto.json").read_text())["frontier"]
    chosen = [p for p in pareto if p["chosen"]]
    assert len(chosen) == 1 and chosen[0]["rule"]["kept"] == [False, True, True]
    harness = app / "app/src/main/cpp/harness"
    assert (harness / "ee_bundle_gen.c").read_text().count(calibrated.manifest.decision_hash) == 1
    assert first.calibrated and len(first.written) > 20 and not first.removed

    again = install_bundle(calibrated.root, app, n_samples=20)
    assert again.written == [] and again.removed == [] and again.unchanged == len(first.written)

    (assets / "samples.bin").unlink()
    (assets / "bundle/old_stage.tflite").write_bytes(b"from an older bundle")
    third = install_bundle(calibrated.root, app, n_samples=20)
    assert third.written == ["app/src/main/assets/eecompile/samples.bin"]
    assert third.removed == ["app/src/main/assets/eecompile/bundle/old_stage.tflite"]


def test_bundle_refuses_a_non_app_dir_and_a_bad_bundle(calibrated, app, tmp_path):
    from eecompile.android.app import AppError, install_bundle
    from eecompile.errors import BundleError

    install_bundle(calibrated.root, app, n_samples=10)
    before = tree_digest(app)
    not_app = tmp_path / "not-app"
    not_app.mkdir()
    with pytest.raises(AppError, match="is not the eecompile Android app"):
        install_bundle(calibrated.root, not_app)
    assert list(not_app.iterdir()) == []

    corrupt = tmp_path / "corrupt"
    shutil.copytree(calibrated.root, corrupt)
    data = bytearray((corrupt / "stages.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (corrupt / "stages.tflite").write_bytes(bytes(data))
    with pytest.raises(BundleError):
        install_bundle(corrupt, app)

    failed = tmp_path / "failed"
    shutil.copytree(calibrated.root, failed)
    m = json.loads((failed / "manifest.json").read_text())
    m["validation"]["passed"] = False
    m["validation"]["failures"] = [{"message": "exit 2 top-1 agreement 0.91 < 0.98"}]
    (failed / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="failed validation"):
        install_bundle(failed, app)
    assert tree_digest(app) == before  # nothing of the refused bundles reached the app

    res = cli("bundle", failed, "--android", app)
    assert res.returncode == 1 and "failed validation" in res.stderr and "hint:" in res.stderr
    assert "Traceback" not in res.stderr and tree_digest(app) == before


# ---- the JNI bridge in a JVM on the host ----------------------------------------------------

def _c_runner(bundle, samples_bin: Path, n: int, tmp: Path) -> tuple[dict, np.ndarray]:
    from eecompile.harness import build_harness, find_litert_lib, generate_harness

    exe = build_harness(generate_harness(bundle, tmp / "c"), tmp / "c-build").ee_run
    dump = tmp / "logits.bin"
    proc = subprocess.run([str(exe), str(bundle.root), str(samples_bin), "--litert", str(find_litert_lib()), "--json",
                           "--dump-logits", str(dump)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    m = bundle.manifest
    return json.loads(proc.stdout), np.fromfile(dump, np.int8).reshape(n, m.n_exits, m.exits[0].n_classes)


def test_jni_bridge_in_a_jvm_equals_python_and_c(calibrated, app, tmp_path):
    require_tools("cmake", "cc", "java", "javac")
    from eecompile.android.app import install_bundle
    from eecompile.android.hostcheck import host_check

    install_bundle(calibrated.root, app, n_samples=64)
    hc = host_check(app, calibrated.root, tmp_path / "hc")
    assert hc.n == 64 and hc.ok, (hc.class_equal, hc.exit_equal, hc.logits_equal, hc.errors)
    assert hc.exit_counts[0] == 0 and hc.exit_counts[1] > 0  # exit 0 dropped: its trunk ran, no decision
    assert {k: v["thrown"].rsplit(".", 1)[-1] for k, v in hc.errors.items()} == {
        "bad threshold": "IllegalArgumentException", "short input": "IllegalArgumentException",
        "missing bundle": "IllegalStateException", "closed": "IllegalStateException"}
    assert "cannot open" in hc.errors["missing bundle"]["message"]

    # the C runner on the same samples.bin: the same decisions and int8 logits as the JVM
    out, logits = _c_runner(calibrated, app / "app/src/main/assets/eecompile/samples.bin", 64, tmp_path)
    for row, c in zip(hc.rows, out["samples"]):
        assert (row["class_idx"], row["exit_idx"]) == (c["class_idx"], c["exit_idx"])
        for k, raw in enumerate(row["exit_logits"]):
            if raw is not None:
                assert np.array_equal(np.asarray(raw, np.float32).astype(np.int8), logits[row["sample"], k])

    # a rule set through the bridge (setKept + setPolicy), against the Python runtime's
    rule = ("margin", [0.3, 0.3, 0.0], [True, True, True])
    hc2 = host_check(app, calibrated.root, tmp_path / "hc2", rule=rule)
    assert hc2.ok and hc2.exit_counts != hc.exit_counts and hc2.exit_counts[0] > 0


# ---- arm64 Android builds -----------------------------------------------------------------------

def _need_cross():
    require_tools("clang-14", "cmake")
    from eecompile.android.build import CROSS_HEADERS, JNI_HEADERS

    for d in (CROSS_HEADERS, JNI_HEADERS):
        if not d.is_dir():
            require_tools(f"headers {d}")


def test_android_arm64_runner_builds_and_passes_the_bionic_check(calibrated, tmp_path):
    _need_cross()
    from eecompile.android.elfcheck import check_android_elf, read_elf_summary

    out = tmp_path / "h"
    res = cli("harness", calibrated.root, "-o", out, "--arch", "android-arm64", "--build")
    assert res.returncode == 0, res.stderr
    for prog in ("ee_run", "ee_profile"):
        exe = out / "build-android-arm64" / prog
        assert f"built {exe}" in res.stdout
        assert [p for p in check_android_elf(exe, 23) if p.severity == "error"] == []
        s = read_elf_summary(exe)
        assert s["interp"] == "/system/bin/linker64" and s["pie"] and set(s["needed"]) <= {"libc.so", "libm.so",
                                                                                          "libdl.so"}
        assert "stderr" in s["undefined"] and not any(n.startswith("__isoc") for n in s["undefined"])
        assert min(s["load_alignments"]) >= 16384
    # pthread_create etc. exist at 23; the same runner for 21 fails: stderr is a bionic symbol from 23
    res21 = cli("harness", calibrated.root, "-o", tmp_path / "h21", "--arch", "android-arm64", "--build",
                "--min-sdk", "21")
    assert res21.returncode == 1 and "stderr" in res21.stderr and "API 21" in res21.stderr


def test_a_glibc_only_symbol_stops_the_android_build(calibrated, tmp_path):
    """errno through glibc's header is __errno_location, which bionic lacks (its is __errno)."""
    _need_cross()
    from eecompile.android.build import build_android
    from eecompile.errors import HarnessError
    from eecompile.harness.generate import generate_harness

    src = generate_harness(calibrated, tmp_path / "h")
    run_c = src / "src" / "ee_run.c"
    code = run_c.read_text()
    assert code.count("int main(int argc, char **argv) {") == 1
    run_c.write_text("#include <errno.h>\n" + code.replace(
        "int main(int argc, char **argv) {", "int main(int argc, char **argv) {\n    if (argc < 0) return errno;"))
    with pytest.raises(HarnessError, match="__errno_location"):
        build_android(src, tmp_path / "out", programs=("ee_run",))


def test_harness_sources_avoid_what_differs_between_glibc_and_bionic():
    """The Android build compiles against glibc's headers: the constructs whose ABI differs
    between the two (errno, sysconf names, <ctype.h>, scanf, FORTIFY) must not appear."""
    import re

    for f in sorted((ROOT / "runtimes/c/src").glob("*.c")) + [APP / "app/src/main/cpp/ee_jni.c"]:
        code = re.sub(r"/\*.*?\*/|//[^\n]*", "", f.read_text(), flags=re.S)
        for bad in (r"\berrno\b", r"\bsysconf\s*\(", r"#include\s*<ctype\.h>", r"\bscanf\s*\(", r"\bsscanf\s*\(",
                    r"\bassert\s*\(", r"\baligned_alloc\s*\("):
            assert not re.search(bad, code), f"{f.name}: {bad}"


# ---- the offline APK ------------------------------------------------------------------------------

def _fake_android_litert(tmp: Path) -> Path:
    """A stand-in libLiteRt.so for arm64 Android (the real one is in LiteRT's AAR, not reachable
    here): an empty bionic library with the right soname, to show the APK carries it."""
    from eecompile.android.stubs import find_toolchain, link_flags, write_stub_libs

    tc = find_toolchain()
    stubs = write_stub_libs(tmp / "stubs", 23)[0].parent
    src = tmp / "lite.c"
    src.write_text("int LiteRtGetVersion(void *v) { return 0; }\n")
    out = tmp / "libLiteRt.so"
    subprocess.run([tc.clang, tc.target(23), "-fPIC", *link_flags(tc, stubs, soname="libLiteRt.so"), "-o", str(out),
                    str(src), "-lc"], check=True, capture_output=True)
    return out


def test_offline_apk_builds_signs_and_verifies(calibrated, app, tmp_path):
    _need_cross()
    require_tools("aapt", "zipalign", "apksigner", "javac", "keytool", "dpkg-deb")
    from eecompile.android.elfcheck import check_android_elf

    lite = _fake_android_litert(tmp_path)
    apk = tmp_path / "out" / "demo.apk"
    res = cli("bundle", calibrated.root, "--android", app, "--samples", "32", "--apk", apk, "--litert", lite)
    assert res.returncode == 0, res.stderr
    assert "native-code arm64-v8a" in res.stdout and "signature verified" in res.stdout
    verify = subprocess.run(["apksigner", "verify", "-v", str(apk)], capture_output=True, text=True)
    assert verify.returncode == 0 and "Verified using v2 scheme (APK Signature Scheme v2): true" in verify.stdout
    badging = subprocess.run(["aapt", "dump", "badging", str(apk)], capture_output=True, text=True).stdout
    assert "package: name='dev.eecompile.demo'" in badging and "native-code: 'arm64-v8a'" in badging
    assert "sdkVersion:'23'" in badging and "launchable-activity: name='dev.eecompile.demo.MainActivity'" in badging
    with zipfile.ZipFile(apk) as z:
        infos = {i.filename: i for i in z.infolist()}
        assets = [i for n, i in infos.items() if n.startswith("assets/eecompile/")]
        assert len(assets) == 7 and all(i.compress_type == zipfile.ZIP_STORED for i in assets)
        assert z.read("assets/eecompile/bundle/stages.tflite") == (calibrated.root / "stages.tflite").read_bytes()
        assert b"Ldev/eecompile/EeHarness;" in z.read("classes.dex")
        assert {"lib/arm64-v8a/libeecompile_jni.so", "lib/arm64-v8a/libLiteRt.so"} <= set(infos)
        (tmp_path / "jni.so").write_bytes(z.read("lib/arm64-v8a/libeecompile_jni.so"))
    assert [p for p in check_android_elf(tmp_path / "jni.so", 23, allowed_needed=("libc.so", "libm.so", "libdl.so",
                                                                                 "liblog.so")) if p.severity == "error"] == []


def test_apk_refuses_a_glibc_litert(calibrated, app, tmp_path):
    _need_cross()
    require_tools("aarch64-linux-gnu-gcc")
    src = tmp_path / "g.c"
    src.write_text("#include <stdlib.h>\nvoid *LiteRtGetVersion(size_t n) { return malloc(n); }\n")
    lib = tmp_path / "libLiteRt.so"
    subprocess.run(["aarch64-linux-gnu-gcc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    res = cli("bundle", calibrated.root, "--android", app, "--apk", tmp_path / "x.apk", "--litert", lib)
    assert res.returncode == 1 and "not an arm64 Android library" in res.stderr and "AAR" in res.stderr
    assert not (tmp_path / "x.apk").exists()


# ---- profiling an Android phone: Linux builds refused before a push ----------------------------------

def test_profile_android_device_refuses_glibc_builds(calibrated, tmp_path):
    import os

    require_tools("adb", "aarch64-linux-gnu-gcc")
    if os.geteuid() != 0:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("the adb stand-in needs root")
    from adb_standin import AdbStandin, FakeDevice

    src = tmp_path / "g.c"
    src.write_text("int main(void) { return 0; }\n")
    exe = tmp_path / "ee_profile"
    subprocess.run(["aarch64-linux-gnu-gcc", "-o", str(exe), str(src)], check=True)
    with AdbStandin([FakeDevice("phone-1", abi="arm64-v8a")]) as srv:
        res = cli("profile", calibrated.root, "--device", "adb", "--runner", exe, "--litert", exe,
                  env={**srv.env, "ANDROID_SERIAL": ""})
        pushed = [s for _, s in srv.requests if s.startswith("sync:")]
    assert res.returncode == 1 and "is a Linux (glibc) build; this device runs Android" in res.stderr
    assert "--arch android-arm64" in res.stderr and pushed == []
