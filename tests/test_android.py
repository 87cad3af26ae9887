"""The Android deployment, as far as this machine can take it (no phone, no emulator, no NDK):

- ``eecompile bundle --android``: copies, is idempotent, refuses what it must (nothing written),
  writes its stamp last (an install cut short is refused by the builds), touches only the two
  folders it owns (config paths checked), ``--create`` all or nothing; the pareto.json it writes
  has every key the app's Pareto.java reads;
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
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import require_tools

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "android_demo"
PARETO_JAVA = APP / "app/src/main/java/dev/eecompile/demo/Pareto.java"


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


def _with_report(bundle, dst: Path, edit) -> Path:
    """A copy of ``bundle`` whose calibration/report.json is ``edit(report)`` (a dict, or text)."""
    shutil.copytree(bundle.root, dst)
    f = dst / "calibration" / "report.json"
    new = edit(json.loads(f.read_text()))
    f.write_text(new if isinstance(new, str) else json.dumps(new))
    return dst


def _java_reads() -> tuple[set[tuple[str, str]], set[str], dict[str, str]]:
    """What Pareto.java reads: (object, key) pairs with a literal key, the keys it tests with
    isNull (null allowed), and the variables used as keys, by the top-level key they come from."""
    code = re.sub(r"/\*.*?\*/|//[^\n]*", "", PARETO_JAVA.read_text(), flags=re.S)
    reads = re.findall(r"\b(\w+)\.(get\w*|opt\w*|isNull|has)\(\s*\"([^\"]+)\"\s*\)", code)
    nullable = {key for _, fn, key in reads if fn == "isNull"}
    variables = dict(re.findall(r"\b(\w+)\s*=\s*top\.getString\(\s*\"([^\"]+)\"\s*\)", code))
    for recv, var in re.findall(r"\b(top|pt|rule|cost)\.(?:get|opt)\w*\(\s*([A-Za-z_]\w*)\s*\)", code):
        assert var in variables, f"Pareto.java reads {recv}.(..{var}..): a key this test cannot follow"
    return {(recv, key) for recv, _, key in reads}, nullable, {v: k for v, k in variables.items()}


def _check_pareto_for_java(front: dict) -> None:
    reads, nullable, variables = _java_reads()
    points = front["frontier"]
    objects = {"top": [front], "pt": points, "rule": [p["rule"] for p in points], "cost": [p["cost"] for p in points]}
    assert reads and {r for r, _ in reads} <= set(objects), f"Pareto.java reads objects {reads}: name them as the " \
                                                            "test expects (top, pt, rule, cost)"
    for recv, key in reads:
        for obj in objects[recv]:
            assert key in obj, f"pareto.json lacks {recv}.{key}, which Pareto.java reads"
            assert obj[key] is not None or key in nullable, f"{recv}.{key} is null; Pareto.java does not allow it"
    for top_key in variables.values():  # cost.getDouble(kind), kind = top.getString("cost_kind")
        assert all(front[top_key] in p["cost"] for p in points)
    for p in points:
        assert len(p["rule"]["thresholds"]) == len(p["rule"]["kept"]) and isinstance(p["chosen"], bool)
    assert sum(p["chosen"] for p in points) <= 1


def test_pareto_json_has_every_key_the_app_reads(calibrated, app, tmp_path):
    """The keys come from Pareto.java itself: a key the app starts to read fails here until the
    Python side writes it. Also the point appended for a rule off the frontier (target drop
    null, shares from the holdout's exit_shares)."""
    from eecompile.android.app import install_bundle
    from eecompile.android.contents import pareto

    reads, nullable, _ = _java_reads()
    assert {("pt", "accuracy"), ("pt", "target_drop_pts"), ("rule", "policy"), ("rule", "thresholds"),
            ("rule", "kept"), ("pt", "chosen")} <= reads and "target_drop_pts" in nullable
    install_bundle(calibrated.root, app, n_samples=10)
    front = json.loads((app / "app/src/main/assets/eecompile/pareto.json").read_text())
    _check_pareto_for_java(front)
    assert front["cost_kind"] == "macs" and front["cost_unit"] == "MMAC"

    def off_frontier(rep):  # the frontier without the bundle's own rule: pareto() appends it
        def other(r):
            return r["kept"] != rep["rule"]["kept"] or any(
                abs(a - b) > 1e-6 for a, b in zip(r["thresholds"][:-1], rep["rule"]["thresholds"][:-1]))

        rep["frontier"] = [p for p in rep["frontier"] if "rule" in p and other(p["rule"])]
        assert rep["frontier"]
        return rep

    front = pareto(load_bundle_of(_with_report(calibrated, tmp_path / "off", off_frontier)))
    _check_pareto_for_java(front)
    chosen = [p for p in front["frontier"] if p["chosen"]]
    assert len(chosen) == 1 and chosen[0]["target_drop_pts"] is None and chosen[0]["shares"] is not None
    assert chosen[0]["rule"]["kept"] == [False, True, True]


def load_bundle_of(path: Path):
    from eecompile import load_bundle

    return load_bundle(path)


@pytest.mark.parametrize("edit", ["not json {", "[]", "drop-accuracy", "bad-kept", "nan-cost"])
def test_a_broken_calibration_report_is_a_bundle_error(calibrated, app, tmp_path, edit):
    from eecompile.android.app import install_bundle
    from eecompile.errors import BundleError

    def broken(rep):
        if edit in ("not json {", "[]"):
            return edit
        p = next(p for p in rep["frontier"] if "rule" in p)
        if edit == "drop-accuracy":
            del p["accuracy"]
        elif edit == "bad-kept":
            p["rule"]["kept"] = [1, 1]
        else:
            p["cost"][rep["primary_cost"]] = "NaN"
        return rep

    bad = _with_report(calibrated, tmp_path / "bad", broken)
    before = tree_digest(app)
    with pytest.raises(BundleError, match="not a readable calibration report") as err:
        install_bundle(bad, app)
    assert "eecompile calibrate" in err.value.hint and tree_digest(app) == before


def test_an_install_cut_short_is_refused_until_done_again(calibrated, int8_bundle, app, monkeypatch):
    """stamp.txt goes first and comes back last; the builds check it and the harness."""
    import eecompile.android.app as app_mod
    from eecompile.android.app import AppError, check_installed, install_bundle, load_app
    from eecompile.harness.generate import generate_harness

    install_bundle(calibrated.root, app, n_samples=10)
    assets, harness = app / "app/src/main/assets/eecompile", app / "app/src/main/cpp/harness"
    stamp = (assets / "stamp.txt").read_text()
    assert check_installed(load_app(app))["decision_hash"] == calibrated.manifest.decision_hash

    real, calls = app_mod.atomic_write_bytes, []

    def dies_on_the_third(path, data):
        calls.append(Path(path).name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(app_mod, "atomic_write_bytes", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        install_bundle(int8_bundle.root, app, n_samples=12)  # another rule, other samples
    monkeypatch.setattr(app_mod, "atomic_write_bytes", real)
    assert not (assets / "stamp.txt").exists() and "stamp.txt" not in calls
    with pytest.raises(AppError, match="incomplete install"):
        check_installed(load_app(app))
    res = install_bundle(int8_bundle.root, app, n_samples=12)
    assert "app/src/main/assets/eecompile/stamp.txt" in res.written and (assets / "stamp.txt").read_text() != stamp
    assert check_installed(load_app(app))["decision_hash"] == int8_bundle.manifest.decision_hash

    # the harness is in the stamp's digest: a changed generated file is caught
    gen = harness / "ee_bundle_gen.c"
    gen.write_text(gen.read_text() + "\n/* edited */\n")
    with pytest.raises(AppError, match="not those `eecompile bundle` wrote"):
        check_installed(load_app(app))
    # a harness of another rule with a stamp made to match: the decision hash gives it away
    other = generate_harness(calibrated, harness.parent / "other-h", force=True)
    shutil.copy(other / "ee_bundle_gen.c", gen)
    shutil.rmtree(other)
    from eecompile.android.contents import stamp_digest

    files = {k: f.read_bytes() for k, f in app_mod._on_disk(load_app(app)).items()}
    (assets / "stamp.txt").write_text(stamp_digest(files) + "\n")
    with pytest.raises(AppError, match="does not belong to the bundle"):
        check_installed(load_app(app))


def _set_config(app: Path, **kw) -> None:
    cfg = json.loads((app / "eecompile-app.json").read_text())
    (app / "eecompile-app.json").write_text(json.dumps({**cfg, **kw}))


@pytest.mark.parametrize("kw, message", [
    ({"assets": "."}, "not a relative path inside the app"),
    ({"assets": "/tmp/eecompile"}, "not a relative path inside the app"),
    ({"assets": "../outside/eecompile"}, "not a relative path inside the app"),
    ({"assets": "app/src/main"}, "must end in /eecompile"),
    ({"harness": "app/src/main/cpp"}, "must end in /harness"),
    ({"harness": "app/src/main/assets/eecompile/harness"}, "must not contain one another"),
    ({"min_sdk": "23"}, "min_sdk '23' is not an integer"),
    ({"target_sdk": 21}, "target_sdk 21 is below min_sdk 23"),
    ({"version_code": True}, "version_code True is not an integer"),
    ({"package": "demo"}, "not a Java package name"),
])
def test_the_app_config_is_checked_before_anything_is_touched(calibrated, app, tmp_path, kw, message):
    from eecompile.android.app import AppError, install_bundle

    (app / "app/src/main/user-notes.txt").write_text("mine")
    _set_config(app, **kw)
    before = tree_digest(tmp_path)
    with pytest.raises(AppError, match=re.escape(message)):
        install_bundle(calibrated.root, app, n_samples=4)
    assert tree_digest(tmp_path) == before


def test_an_owned_folder_that_leads_out_of_the_app_is_refused(calibrated, app, tmp_path):
    from eecompile.android.app import AppError, install_bundle

    outside = tmp_path / "home"
    (outside / "eecompile").mkdir(parents=True)
    (outside / "eecompile" / "photo.jpg").write_bytes(b"not eecompile's")
    (app / "app/src/main/assets").mkdir(parents=True)
    (app / "app/src/main/assets/eecompile").symlink_to(outside / "eecompile")
    with pytest.raises(AppError, match="leads out of the app"):
        install_bundle(calibrated.root, app, n_samples=4)
    assert [p.name for p in (outside / "eecompile").iterdir()] == ["photo.jpg"]
    (app / "app/src/main/assets/eecompile").unlink()
    (app / "app/src/main/assets/eecompile").symlink_to(app / "app/src/main/res")
    with pytest.raises(AppError, match="not a folder named eecompile"):
        install_bundle(calibrated.root, app, n_samples=4)
    assert (app / "app/src/main/res/values/strings.xml").is_file()


def test_create_is_all_or_nothing(calibrated, app, tmp_path, monkeypatch):
    from eecompile.android.app import create_app, install_bundle
    from eecompile.errors import OutputPathError

    bad = _with_report(calibrated, tmp_path / "bad", lambda rep: "{")
    res = cli("bundle", bad, "--android", tmp_path / "new" / "app", "--create")
    assert res.returncode == 1 and "calibration report" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "new").exists() or list((tmp_path / "new").iterdir()) == []

    res = cli("bundle", calibrated.root, "--android", app, "--create")
    assert res.returncode == 1 and "drop --create" in res.stderr

    made = install_bundle(calibrated.root, tmp_path / "made", n_samples=5, create=True)
    assert made.created and made.app == (tmp_path / "made").resolve() and made.n_samples == 5
    assert not [p for p in tmp_path.iterdir() if ".create-" in p.name]

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    monkeypatch.chdir(busy)
    with pytest.raises(OutputPathError, match="not an empty directory"):
        create_app(".")
    with pytest.raises(OutputPathError, match="cannot create the app at /"):
        create_app("/")


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

    assert hc.jni_warnings == [] and hc.decision_hash == calibrated.manifest.decision_hash

    # a rule set through the bridge (setKept + setPolicy), against the Python runtime's; class
    # names beyond ASCII (2-, 3- and 4-byte UTF-8) come back from describe() unchanged
    named = tmp_path / "named"
    shutil.copytree(calibrated.root, named)
    m = json.loads((named / "manifest.json").read_text())
    names = ["zéro", "\"one\"", "二", "three\\", "𝟜 four", "five\n", *m["exits"][-1]["class_names"][6:]]
    for e in m["exits"]:
        e["class_names"] = names
    (named / "manifest.json").write_text(json.dumps(m))
    install_bundle(named, app, n_samples=64)
    rule = ("margin", [0.3, 0.3, 0.0], [True, True, True])
    hc2 = host_check(app, named, tmp_path / "hc2", rule=rule)
    assert hc2.ok and hc2.exit_counts != hc.exit_counts and hc2.exit_counts[0] > 0
    assert hc2.describe["class_names"] == names


def test_host_check_needs_every_error_case_and_the_bundles_rule(calibrated, int8_bundle, app, tmp_path):
    from eecompile.android.app import install_bundle
    from eecompile.android.hostcheck import ERROR_CASES, HostCheck, host_check
    from eecompile.errors import HarnessError

    good = {c: {"expected": True} for c in ERROR_CASES}
    base = dict(n=4, class_equal=4, exit_equal=4, logits_equal=4, exit_counts=[0, 4], mean_us=1.0,
                decision_hash="ab", bundle_decision_hash="ab")
    assert HostCheck(**base, errors=good).ok
    assert not HostCheck(**base, errors={c: e for c, e in good.items() if c != "closed"}).ok
    assert not HostCheck(**base, errors={**good, "short input": {"expected": False}}).ok
    assert not HostCheck(**{**base, "decision_hash": "cd"}, errors=good).ok
    assert not HostCheck(**base, errors=good, jni_warnings=["WARNING in native method: ..."]).ok

    # the same models with another decision rule: refused before anything is built
    install_bundle(calibrated.root, app, n_samples=8)
    with pytest.raises(HarnessError, match="another decision rule"):
        host_check(app, int8_bundle.root, tmp_path / "hc")
    assert not (tmp_path / "hc").exists()


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


def test_android_build_names_its_outputs_only_after_the_check(calibrated, tmp_path, monkeypatch):
    """A runner cache or build directory never holds a binary that failed the bionic check."""
    _need_cross()
    import eecompile.android.build as build
    from eecompile.android.elfcheck import Problem
    from eecompile.errors import HarnessError
    from eecompile.harness.generate import generate_harness

    src = generate_harness(calibrated, tmp_path / "h")
    out = tmp_path / "out"
    out.mkdir()
    (out / "ee_run").write_bytes(b"an older build")
    seen = []

    def refuses(path, min_sdk, allowed_needed=()):
        seen.append(Path(path))
        assert Path(path).is_file() and not (out / "ee_run").exists()
        return [Problem("glibc-symbol", "__errno_location", "stand-in for a failed check", "error")]

    monkeypatch.setattr(build, "check_android_elf", refuses)
    with pytest.raises(HarnessError, match="stand-in for a failed check"):
        build.build_android(src, out, programs=("ee_run",))
    assert seen and not (out / "ee_run").exists() and not any(p.exists() for p in seen)

    monkeypatch.undo()
    res = build.build_android(src, out, programs=("ee_run",))
    assert res.outputs == {"ee_run": out / "ee_run"} and (out / "ee_run").stat().st_size > 10000


def _fake_elf(path: Path, machine: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(11) + machine.to_bytes(2, "little") + bytes(44))
    return path


def test_profile_runner_dir_finds_the_build_for_the_device(calibrated, tmp_path):
    from eecompile.errors import ProfileError
    from eecompile.profile.runner import artifacts_for

    lite = _fake_elf(tmp_path / "libLiteRt.so", 183)
    d = tmp_path / "c-android"
    exe = _fake_elf(d / "build-android-arm64" / "ee_profile", 183)
    assert artifacts_for(calibrated, "arm64-v8a", d, lite, android=True).runner == exe
    board = _fake_elf(d / "build-aarch64" / "ee_profile", 183)
    assert artifacts_for(calibrated, "aarch64", d, lite, android=False).runner == board
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ProfileError, match="no ee_profile in") as err:
        artifacts_for(calibrated, "arm64-v8a", empty, lite, android=True)
    assert "build-android-arm64/ee_profile" in err.value.message and "--arch android-arm64" in err.value.hint


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


# ---- the SDK pieces, the sources' references ---------------------------------------------------------

def _fake_deb(where: Path, package: str, member: str) -> tuple[Path, str]:
    from eecompile.util import sha256_file

    root = where / f"{package}-root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(f"Package: {package}\nVersion: 1.0\nArchitecture: all\n"
                                             "Maintainer: t <t@t>\nDescription: t\n")
    (root / member).parent.mkdir(parents=True)
    (root / member).write_bytes(package.encode())
    deb = where / f"{package}_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)], check=True, capture_output=True)
    return deb, sha256_file(deb)


def test_sdk_pieces_come_from_local_copies_before_the_network(tmp_path, monkeypatch):
    require_tools("dpkg-deb")
    import eecompile.android.sdk as sdk
    from eecompile.errors import ToolError

    debs = tmp_path / "debs"
    debs.mkdir()
    pieces = []
    for name, member in (("fake-android", "usr/share/java/a.jar"), ("fake-dx", "usr/share/java/dx.jar")):
        _, digest = _fake_deb(debs, name, member)
        pieces.append(sdk.Deb(name, "1.0", digest, member))
    monkeypatch.setattr(sdk, "ANDROID_JAR", pieces[0])
    monkeypatch.setattr(sdk, "DX_JAR", pieces[1])
    monkeypatch.setenv("EECOMPILE_ANDROID_DEBS", str(debs))

    def no_network(*a, **k):
        raise AssertionError("downloaded although verified copies were there")

    monkeypatch.setattr(sdk, "_apt_download", no_network)
    jar, dx = sdk.java_pieces(tmp_path / "cache")
    assert jar.read_bytes() == b"fake-android" and dx.read_bytes() == b"fake-dx"

    # no copy, and apt-get hangs: a ToolError that names the timeout, not a TimeoutExpired
    monkeypatch.undo()
    monkeypatch.setattr(sdk, "ANDROID_JAR", sdk.Deb("absent", "1.0", "0" * 64, "usr/share/java/x.jar"))
    monkeypatch.setattr(sdk, "_fallback_dirs", lambda: [tmp_path / "nowhere"])
    monkeypatch.setattr(sdk.shutil, "which", lambda name: "/usr/bin/" + name)

    def hangs(cmd, **kw):
        raise subprocess.TimeoutExpired(cmd, kw.get("timeout"))

    monkeypatch.setattr(sdk.subprocess, "run", hangs)
    with pytest.raises(ToolError, match="did not finish in") as err:
        sdk.java_pieces(tmp_path / "cache2")
    assert "EECOMPILE_ANDROID_DEBS" in err.value.hint


def test_sources_refer_to_what_exists():
    """Tests, options and documents the Android sources name must exist."""
    tests = {p.name for p in (ROOT / "tests").glob("test_*.py")}
    files = [p for d in (ROOT / "eecompile/android", APP) for p in d.rglob("*")
             if p.is_file() and p.suffix in (".py", ".java", ".c", ".txt", ".gradle", ".json", ".xml", ".md")
             and "assets" not in p.parts and "harness" not in p.parts]
    cmake = "\n".join(p.read_text() for p in files if p.name == "CMakeLists.txt")
    for f in files:
        text = f.read_text(errors="replace")
        for name in re.findall(r"\b(test_\w+\.py)\b", text):
            assert name in tests, f"{f.relative_to(ROOT)} names {name}, which does not exist"
        assert "ANDROID.md" not in text, f"{f.relative_to(ROOT)} cites ANDROID.md, which is not in the repository"
        for opt in re.findall(r"-D(EE_\w+)=", text):
            assert re.search(rf"\b(if|option)\s*\(\s*(NOT\s+)?{opt}\b", cmake), f"{f.name}: -D{opt} is no option"


def test_a_failed_host_check_names_what_failed():
    """The CLI's message lists each failure (a stale library's hash, a missing error case, a
    disagreement), not one catch-all."""
    from eecompile.android.hostcheck import ERROR_CASES, HostCheck

    ok_errors = {case: {"expected": True} for case in ERROR_CASES}
    good = HostCheck(5, 5, 5, 5, [5, 0], 10.0, ok_errors, decision_hash="a", bundle_decision_hash="a")
    assert good.ok and good.problems() == []
    stale = HostCheck(5, 5, 5, 5, [5, 0], 10.0, ok_errors, decision_hash="old", bundle_decision_hash="new")
    assert not stale.ok and stale.problems() == [
        "the library's decision hash old is not the bundle's new (rebuild the app's library for this bundle)"]
    errs = dict(ok_errors)
    errs[ERROR_CASES[0]] = {"expected": False}
    bad = HostCheck(5, 4, 5, 5, [5, 0], 10.0, errs, decision_hash="a", bundle_decision_hash="a",
                    jni_warnings=["WARNING in native method"])
    assert bad.problems() == [
        "the JNI bridge disagrees with the Python runtime (class 4, exit 5, logits 5 of 5 equal)",
        f"error case(s) {ERROR_CASES[0]} not thrown as expected", "-Xcheck:jni warned: WARNING in native method"]
