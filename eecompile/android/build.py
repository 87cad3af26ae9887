"""Cross-build the harness for arm64 Android without an NDK: ``ee_run`` and ``ee_profile`` as PIE
executables (for ``eecompile profile --device adb``) and the app's JNI library, each checked
against bionic before anything reaches a phone: outputs are linked under ``obj/`` and moved to
their names only once the check passes, so a build directory (or the runner cache of
``eecompile profile``) never holds a binary that failed it.

How (the README's Android section): clang ``--target=aarch64-linux-android<minSdk>`` against the aarch64 cross
headers with ``-U_FORTIFY_SOURCE``, linked by lld with ``-nostdlib`` against stub bionic
libraries (``stubs.py``: the names of minSdk's exports, nothing else), ``--hash-style=both``,
16 KB pages; executables start at ``PIE_START_C``'s ``_start``. Every output then passes
``elfcheck``: each undefined symbol exported by bionic at minSdk, no glibc-only symbol or
version, NEEDED only bionic's libraries. glibc's headers and bionic agree on the structures and
constants this code uses on arm64 (``struct timespec``/``dirent``/``stat`` follow the kernel's
generic layout, ``RTLD_*``, ``CLOCK_MONOTONIC``, ``cpu_set_t`` of 1024 bits), and the harness
avoids the ones that differ (``errno``, ``sysconf`` names, ``<ctype.h>``, the scanf family):
``tests/test_android.py`` greps the sources for them. Nothing here ran on a phone.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from eecompile.android.elfcheck import Problem, check_android_elf
from eecompile.android.stubs import COMPILE_FLAGS, PIE_START_C, Toolchain, find_toolchain, link_flags, write_stub_libs
from eecompile.errors import HarnessError, ToolError

# LiteRT 2.3's own minimum (com.google.ai.edge.litert:litert:2.3.0 on Maven); bionic exports
# stdout/stderr as data symbols from 23 on, which the harness's fprintf(stderr, ...) needs.
DEFAULT_MIN_SDK = 23
ABI = "arm64-v8a"
CROSS_HEADERS = Path("/usr/aarch64-linux-gnu/include")
JNI_HEADERS = Path("/usr/include/android/nativehelper")  # jni.h (android-libnativehelper-dev)
LIB_SOURCES = ("ee_session.c", "ee_litert.c", "ee_file.c", "ee_decide.c", "ee_args.c")
PROGRAMS = {"ee_run": "ee_run.c", "ee_profile": "ee_profile.c"}
JNI_LIB = "libeecompile_jni.so"
CFLAGS = (*COMPILE_FLAGS, "-std=gnu11", "-DNDEBUG", "-Wall", "-Wextra", "-Wno-unused-parameter",
          "-ffunction-sections", "-fdata-sections")
SYSTEM_LIBS = ("libc.so", "libm.so", "libdl.so", "liblog.so")
INSTALL_HINT = "apt-get install -y clang-14 lld-14 crossbuild-essential-arm64 android-libnativehelper-dev"


@dataclass
class AndroidBuild:
    out_dir: Path
    min_sdk: int
    outputs: dict[str, Path] = field(default_factory=dict)  # "ee_run", "ee_profile", "jni" -> file
    warnings: dict[str, list[Problem]] = field(default_factory=dict)


def _compile(tc: Toolchain, src: Path, obj: Path, min_sdk: int, includes: list[Path]) -> None:
    cmd = [tc.clang, tc.target(min_sdk), *CFLAGS, "-isystem", str(CROSS_HEADERS),
           *[f"-I{p}" for p in includes], "-c", str(src), "-o", str(obj)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise HarnessError(f"compiling {src.name} for {ABI} failed:\n{proc.stderr.strip()[-1500:]}",
                           hint="the Android build accepts only C that bionic supports; see eecompile/android/build.py")


def _link(tc: Toolchain, objs: list[Path], out: Path, stubs: Path, min_sdk: int, shared: bool, libs: list[str],
          extra: list[str] | None = None) -> None:
    cmd = [tc.clang, tc.target(min_sdk), *link_flags(tc, stubs, soname=out.name if shared else None, shared=shared),
           "-Wl,--gc-sections", *(extra or []), "-o", str(out), *map(str, objs), *[f"-l{lib}" for lib in libs]]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise HarnessError(f"linking {out.name} for {ABI} (API {min_sdk}) failed:\n{proc.stderr.strip()[-1500:]}",
                           hint=f"an undefined symbol is not exported by bionic at API {min_sdk}: avoid it or raise "
                                "--min-sdk")


def check_outputs(outputs: dict[str, Path], min_sdk: int) -> dict[str, list[Problem]]:
    """elfcheck every output: errors raise HarnessError naming each problem; warnings are returned."""
    warnings: dict[str, list[Problem]] = {}
    errors = []
    for name, path in outputs.items():
        problems = check_android_elf(path, min_sdk, allowed_needed=SYSTEM_LIBS)
        errors += [f"{path.name}: {p.kind} {p.symbol_or_detail}: {p.message}" for p in problems if p.severity == "error"]
        warnings[name] = [p for p in problems if p.severity != "error"]
    if errors:
        raise HarnessError(f"the {ABI} build would not load on Android {min_sdk}:\n  " + "\n  ".join(errors),
                           hint="fix the sources (see eecompile/android/elfcheck.py for each rule)")
    return warnings


def build_android(harness_dir: str | Path, out_dir: str | Path, min_sdk: int = DEFAULT_MIN_SDK,
                  programs: tuple[str, ...] = ("ee_run", "ee_profile"), jni_source: Path | None = None) -> AndroidBuild:
    """Build ``programs`` (and, given ``jni_source``, the JNI library) from a generated harness
    directory into ``out_dir``, then check them. Raises HarnessError/ToolError with the fix."""
    src = Path(harness_dir).resolve()
    if not (src / "ee_bundle_gen.c").is_file():
        raise HarnessError(f"{src} holds no generated harness (ee_bundle_gen.c)",
                           hint="eecompile harness BUNDLE -o DIR --arch android-arm64 writes one")
    if not CROSS_HEADERS.is_dir():
        raise ToolError(f"{CROSS_HEADERS} is missing (the aarch64 C headers)", hint=INSTALL_HINT)
    if jni_source is not None and not (JNI_HEADERS / "jni.h").is_file():
        raise ToolError(f"{JNI_HEADERS}/jni.h is missing", hint=INSTALL_HINT)
    unknown = [p for p in programs if p not in PROGRAMS]
    if unknown:
        raise HarnessError(f"unknown program(s) {unknown}", hint=f"choose among {sorted(PROGRAMS)}")
    tc = find_toolchain()
    out = Path(out_dir).resolve()
    obj_dir = out / "obj"
    obj_dir.mkdir(parents=True, exist_ok=True)
    stubs = write_stub_libs(out / "stubs", min_sdk)[0].parent
    includes = [src / "include", src / "src", src]
    jobs: dict[str, Path] = {name: src / "src" / name for name in LIB_SOURCES}
    jobs["ee_bundle_gen.c"] = src / "ee_bundle_gen.c"
    for prog in programs:
        jobs[PROGRAMS[prog]] = src / "src" / PROGRAMS[prog]
    start = obj_dir / "eec_start.c"
    if programs:
        start.write_text(PIE_START_C)
        jobs["eec_start.c"] = start
    if jni_source is not None:
        jobs["ee_jni.c"] = Path(jni_source)
        includes.append(JNI_HEADERS)
    objs = {name: obj_dir / (Path(name).stem + ".o") for name in jobs}
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for f in [pool.submit(_compile, tc, path, objs[name], min_sdk, includes) for name, path in jobs.items()]:
            f.result()
    lib_objs = [objs[n] for n in LIB_SOURCES] + [objs["ee_bundle_gen.c"]]
    finals = {prog: out / prog for prog in programs} | ({"jni": out / JNI_LIB} if jni_source is not None else {})
    for f in finals.values():  # an older build's output must not outlive a failed one
        f.unlink(missing_ok=True)
    unchecked = {name: obj_dir / f.name for name, f in finals.items()}  # same names: sonames, messages
    try:
        for prog in programs:
            _link(tc, [objs["eec_start.c"], objs[PROGRAMS[prog]], *lib_objs], unchecked[prog], stubs, min_sdk,
                  shared=False, libs=["c", "m", "dl"])
        if jni_source is not None:
            script = obj_dir / "jni.map"
            script.write_text("{\n  global: Java_*; JNI_OnLoad; JNI_OnUnload;\n  local: *;\n};\n")
            _link(tc, [objs["ee_jni.c"], *lib_objs], unchecked["jni"], stubs, min_sdk, shared=True,
                  libs=["c", "m", "dl", "log"], extra=[f"-Wl,--version-script={script}"])
        warnings = check_outputs(unchecked, min_sdk)
    except BaseException:
        for f in unchecked.values():
            f.unlink(missing_ok=True)
        raise
    res = AndroidBuild(out, min_sdk, warnings=warnings)
    for name, f in finals.items():
        os.replace(unchecked[name], f)
        res.outputs[name] = f
    return res
