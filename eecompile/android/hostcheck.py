"""The app's native side checked on the host before any phone: the JNI bridge (``ee_jni.c`` and
the generated harness, built by the app's own CMakeLists with the JDK's ``jni.h``) loaded by a
plain JVM running ``EeHarness`` -- the same Java class the app uses -- on the samples the app
ships, against the Python runtime on the original bundle: class, exit and every exit's int8
logits must be equal on every sample; the error paths of ``ERROR_CASES`` must throw what
``EeHarness`` documents; the library's decision hash (``describe()``) must be the bundle's; and
the JVM runs with ``-Xcheck:jni``, whose complaints fail the check. The app's install is checked
first (``app.check_installed``: stamp, harness against bundle). The host's ``libLiteRt.so`` (the
ai-edge-litert wheel's) stands in for the phone's; the C and the Java are the app's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from eecompile.android.app import check_installed, load_app
from eecompile.android.sdk import _jdk_tool
from eecompile.bundle.io import load_bundle
from eecompile.errors import HarnessError, ToolError

HOST_RUN = Path(__file__).parent / "java" / "HostRun.java"
# the error paths HostRun.java drives; each must throw what EeHarness documents
ERROR_CASES = ("bad threshold", "short input", "missing bundle", "closed")
TIMEOUT_S = 900
JNI_COMPLAINT = re.compile(r"(WARNING|FATAL ERROR) in native method")


@dataclass
class HostCheck:
    n: int
    class_equal: int
    exit_equal: int
    logits_equal: int
    exit_counts: list[int]
    mean_us: float
    errors: dict[str, dict] = field(default_factory=dict)  # error case -> what was thrown
    rows: list[dict] = field(default_factory=list)
    decision_hash: str = ""  # the JNI library's (its describe()), against the bundle's
    bundle_decision_hash: str = ""
    jni_warnings: list[str] = field(default_factory=list)  # what -Xcheck:jni reported
    describe: dict = field(default_factory=dict)  # EeHarness.describe() of the library

    @property
    def ok(self) -> bool:
        """Every sample equal, every error case of ERROR_CASES thrown as expected, the library
        built for the bundle's decision rule, and no complaint of -Xcheck:jni."""
        return not self.problems()

    def problems(self) -> list[str]:
        """What failed, one phrase each (empty when ``ok``)."""
        out = []
        if self.n == 0:
            out.append("no sample was run")
        elif not self.class_equal == self.exit_equal == self.logits_equal == self.n:
            out.append(f"the JNI bridge disagrees with the Python runtime (class {self.class_equal}, exit "
                       f"{self.exit_equal}, logits {self.logits_equal} of {self.n} equal)")
        bad = [case for case in ERROR_CASES if self.errors.get(case, {}).get("expected") is not True]
        if bad:
            out.append(f"error case(s) {', '.join(bad)} not thrown as expected")
        if not self.decision_hash or self.decision_hash != self.bundle_decision_hash:
            out.append(f"the library's decision hash {self.decision_hash or '(none)'} is not the bundle's "
                       f"{self.bundle_decision_hash} (rebuild the app's library for this bundle)")
        if self.jni_warnings:
            out.append(f"-Xcheck:jni warned: {self.jni_warnings[0][:200]}")
        return out


def _run(cmd: list[str], what: str, env: dict | None = None) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"{what} did not finish in {TIMEOUT_S} s", hint="see whether the machine is overloaded, "
                        "then run it again") from exc
    if proc.returncode != 0:
        raise HarnessError(f"{what} failed:\n{(proc.stdout + proc.stderr).strip()[-1500:]}",
                           hint="see the output above")
    return proc.stdout


def build_host_jni(app_dir: str | Path, work: Path) -> Path:
    """libeecompile_jni.so for this machine, from the app's cpp/ (CMake, FindJNI)."""
    app = load_app(app_dir)
    if shutil.which("cmake") is None:
        raise ToolError("cmake not found", hint="apt-get install -y cmake")
    javac = _jdk_tool("javac")
    env = {**os.environ, "JAVA_HOME": str(Path(os.path.realpath(javac)).parents[1])}
    build = work / "jni-host"
    _run(["cmake", "-S", str(app.path("cpp")), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"], "cmake (JNI, host)", env)
    _run(["cmake", "--build", str(build), "-j", str(os.cpu_count() or 2), "--target", "eecompile_jni"],
         "building the JNI library", env)
    lib = build / "libeecompile_jni.so"
    if not lib.is_file():
        raise HarnessError(f"the JNI build produced no {lib}", hint="check the cmake output")
    return lib


def compile_java(app_dir: str | Path, work: Path) -> Path:
    app = load_app(app_dir)
    classes = work / "classes"
    classes.mkdir(parents=True, exist_ok=True)
    bridge = app.path("java") / "dev" / "eecompile" / "EeHarness.java"
    _run([_jdk_tool("javac"), "-encoding", "UTF-8", "-d", str(classes), str(bridge), str(HOST_RUN)], "javac")
    return classes


def run_java(classes: Path, lib: Path, bundle_dir: Path, litert: Path, samples: Path,
             rule: tuple[int, list[float], list[bool]] | None = None) -> list[dict]:
    args = [str(lib.resolve()), str(bundle_dir.resolve()), str(litert), str(samples)]
    if rule is not None:
        policy, th, kept = rule
        args += [str(policy), ",".join(repr(float(t)) for t in th), ",".join("1" if k else "0" for k in kept)]
    out = _run([_jdk_tool("java"), "-Xcheck:jni", "-Xss4m", "-cp", str(classes), "HostRun", *args], "java HostRun")
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    warnings = [line.strip() for line in out.splitlines() if JNI_COMPLAINT.search(line)]
    return rows + [{"jni_warning": w} for w in warnings]


def host_check(app_dir: str | Path, bundle_dir: str | Path, work: Path,
               rule: tuple[str, list[float], list[bool]] | None = None) -> HostCheck:
    """Build and run the bridge on the app's samples; compare with the Python runtime (see the
    module doc). ``rule``: (policy, thresholds, kept) set through EeHarness before the run."""
    import numpy as np

    from eecompile.core.names import POLICY_INFO
    from eecompile.core.quant import dequantize
    from eecompile.harness.build import find_litert_lib
    from eecompile.runtime import Runtime

    app = load_app(app_dir)
    bundle = load_bundle(bundle_dir)
    assets = app.path("assets")
    meta = check_installed(app)
    m = bundle.manifest
    if (meta.get("models_sha256"), meta.get("decision_hash")) != (m.models_sha256, m.decision_hash):
        other = "another bundle" if meta.get("models_sha256") != m.models_sha256 else "another decision rule"
        raise HarnessError(f"{app.root} holds {other} than {bundle.root} (decision hash {meta.get('decision_hash')}, "
                           f"the bundle's {m.decision_hash})",
                           hint=f"eecompile bundle {bundle.root} --android {app.root} first")
    work.mkdir(parents=True, exist_ok=True)
    lib = build_host_jni(app.root, work)
    classes = compile_java(app.root, work)
    jrule = None if rule is None else (POLICY_INFO[rule[0]].c_code, rule[1], rule[2])
    rows = run_java(classes, lib, assets / "bundle", find_litert_lib(), assets / "samples.bin", jrule)
    samples = [r for r in rows if "sample" in r]
    errors = {r["error_case"]: r for r in rows if "error_case" in r}
    described = next((r["describe"] for r in rows if "describe" in r), {})
    x, _ = bundle.load_samples()
    x = x[np.asarray(meta["indices"])]
    rt = Runtime(bundle)
    kw = {} if rule is None else {"policy": rule[0], "thresholds": rule[1], "kept": np.asarray(rule[2], bool)}
    ref = rt.run(x, keep_logits=True, **kw)
    specs = [[t for t in s.graphs[-1].outputs if t.role == "logits"][0] for s in m.stages]
    cls = ext = lg = 0
    for i, r in enumerate(samples):
        cls += r["class_idx"] == int(ref.class_idx[i])
        ext += r["exit_idx"] == int(ref.exit_idx[i])
        same = True
        for k, raw in enumerate(r["exit_logits"]):
            want = ref.exit_logits[k][i]
            ran = not np.isnan(want).any()  # NaN: the Python runtime did not evaluate exit k
            if raw is None or not ran:
                same &= (raw is None) == (not ran)
                continue
            got = np.asarray(raw, dtype=np.float32)
            if specs[k].quant is not None:
                got = dequantize(got.astype(np.int8), specs[k].quant)
            same &= bool(np.array_equal(got, want))
        lg += same
    counts = np.bincount([r["exit_idx"] for r in samples], minlength=m.n_exits).tolist()
    mean_us = float(np.mean([r["total_ns"] for r in samples]) / 1e3) if samples else 0.0
    return HostCheck(len(samples), cls, ext, lg, counts, mean_us, errors, samples, described.get("decision_hash", ""),
                     m.decision_hash, [r["jni_warning"] for r in rows if "jni_warning" in r], described)
