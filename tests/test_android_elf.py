"""arm64 Android builds without an NDK: the bionic symbol lists, the stub libraries and the ELF
check, on real files built here with clang/lld (and aarch64-linux-gnu-gcc for a glibc library).
A missing tool skips a test, or fails it when CI is set."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eecompile.android.elfcheck import BIONIC_LIBS, check_android_elf, read_elf_summary, read_symbol_list
from eecompile.android.stubs import (COMPILE_FLAGS, PIE_START_C, ToolchainError, find_toolchain, link_flags,
                                     write_stub_libs)

ROOT = Path(__file__).resolve().parents[1]
INSTALL = "apt-get install -y clang-14 lld-14 crossbuild-essential-arm64"
OK_C = r"""
#include <stddef.h>
void *malloc(size_t); void free(void *); void *dlopen(const char *, int); float expf(float);
int snprintf(char *, size_t, const char *, ...);
struct timespec { long tv_sec; long tv_nsec; }; int clock_gettime(int, struct timespec *);
int __android_log_print(int, const char *, const char *, ...);
int probe(char *buf, size_t n, float x) {
  struct timespec ts; clock_gettime(1, &ts);
  char *p = malloc(n); void *h = dlopen("libfoo.so", 2);
  int r = snprintf(p, n, "%f %p %ld", (double)expf(x), h, (long)ts.tv_sec);
  __android_log_print(4, "probe", "%s", p);
  buf[0] = p[0]; free(p); return r;
}
"""
ALIGNED_C = ("#include <stddef.h>\nvoid *aligned_alloc(size_t, size_t);\n"
             "void *get(size_t n) { return aligned_alloc(64, n); }\n")
GLIBC_C = "#include <errno.h>\nint err(void) { return errno; }\n"


def _missing(reason: str) -> None:
    """Skip, or fail when CI is set: CI must have every tool."""
    (pytest.fail if os.environ.get("CI") else pytest.skip)(f"{reason} ({INSTALL})")


@pytest.fixture(scope="module")
def tc():
    try:
        return find_toolchain()
    except ToolchainError as exc:
        _missing(exc.message)


@pytest.fixture(scope="module")
def stubs(tc, tmp_path_factory):
    """Stub directories by API level, built once per module."""
    base = tmp_path_factory.mktemp("stubs")
    return {api: write_stub_libs(base / str(api), api)[0].parent for api in (24, 28)}


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


def build(tc, tmp: Path, src: str, name: str, stub_dir: Path, api: int = 24, cflags=(), shared=True,
          no_undefined=True, extra=()) -> Path:
    """Compile ``src`` and link it like eecompile.android.build does; return the output file."""
    c = tmp / f"{name}.c"
    c.write_text(src)
    out = tmp / name
    flags = link_flags(tc, stub_dir, soname=name if shared else None, shared=shared)
    if not no_undefined:
        flags.remove("-Wl,--no-undefined")
    cmd = [tc.clang, tc.target(api), *COMPILE_FLAGS, *cflags, *flags, *extra, "-o", str(out), str(c),
           "-lc", "-lm", "-ldl", "-llog"]
    proc = _run(cmd)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr}"
    return out


def _kinds(problems) -> list[tuple[str, str]]:
    return [(p.kind, p.symbol_or_detail) for p in problems]


def test_lists_sanity():
    c, m, dl, log = ({n: a for n, a, _ in read_symbol_list(s[:-3])} for s in BIONIC_LIBS)
    assert c["aligned_alloc"] == 28
    for table, name in ((c, "malloc"), (dl, "dlopen"), (m, "expf"), (c, "clock_gettime"), (c, "__errno"),
                        (c, "__assert2"), (log, "__android_log_print")):
        assert table[name] <= 24, name
    for name in ("__errno_location", "__assert_fail", "__ctype_b_loc", "__isoc99_sscanf"):
        assert all(name not in t for t in (c, m, dl, log)), name
    assert min(min(t.values()) for t in (c, m, dl, log)) == 21
    assert ("stderr", 23, frozenset({"var"})) in read_symbol_list("libc")
    for soname in BIONIC_LIBS:
        text = (ROOT / "eecompile/android/bionic" / f"{soname[:-3]}.arm64.txt").read_text()
        rows = [line.split("\t")[0] for line in text.splitlines() if not line.startswith("#")]
        assert text.startswith("# ") and "source:" in text and rows == sorted(set(rows))


def test_map_parser_rules():
    """The derivation rules of scripts/bionic_lists.py on a small map in AOSP's syntax."""
    spec = importlib.util.spec_from_file_location("bionic_lists", ROOT / "scripts/bionic_lists.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod   # dataclasses look their module up
    spec.loader.exec_module(mod)
    text = """LIBC {
  global:
    plain;
    armonly; # arm x86
    both; # arm arm64 introduced=23
    override; # introduced-arm=9 introduced-arm64=28 introduced=22
    data; # var
    hidden; # apex llndk
  local:
    *;
};
LIBC_N { # introduced-arm64=24
  global:
    nsym;
} LIBC;
LIBLOG_M {
  global:
    floored;
};
LIBC_P { # introduced=28
    psym; # introduced=29
} LIBC_N;
LIBC_PRIVATE {
    priv;
};
LIBC_DEPRECATED { # arm platform-only
    gone;
};
"""
    got, raised = mod.parse_map(text, "arm64")
    assert {n: e.api for n, e in got.items()} == {"plain": 21, "both": 23, "override": 28, "data": 21,
                                                  "nsym": 24, "floored": 23, "psym": 29}
    assert got["data"].flags == {"var"} and raised == 1


def test_good_library_passes(tc, stubs, tmp_path):
    lib = build(tc, tmp_path, OK_C, "libok.so", stubs[24])
    s = read_elf_summary(lib)
    used = {"malloc", "free", "dlopen", "expf", "snprintf", "clock_gettime", "__android_log_print"}
    assert used <= set(s["undefined"])
    assert s["needed"] == ["libc.so", "libm.so", "libdl.so", "liblog.so"] and s["version_needs"] == []
    assert s["hash_styles"] == ["sysv", "gnu"] and min(s["load_alignments"]) == 16384 and s["exec_stack"] is False
    assert s["exports"] == ["probe"] and s["soname"] == "libok.so" and s["interp"] is None
    assert check_android_elf(lib, 24) == []
    assert check_android_elf(lib, 21) == []


def test_aligned_alloc_needs_api_28(tc, stubs, tmp_path):
    lib = build(tc, tmp_path, ALIGNED_C, "libal.so", stubs[28], api=28)
    problems = check_android_elf(lib, 24)
    assert _kinds(problems) == [("symbol-too-new", "aligned_alloc")]
    assert "28" in problems[0].message and "24" in problems[0].message
    assert check_android_elf(lib, 28) == []
    # the API-24 stubs refuse it already at link time
    c = tmp_path / "al.c"
    c.write_text(ALIGNED_C)
    proc = _run([tc.clang, tc.target(24), *link_flags(tc, stubs[24], "libx.so"), "-o", str(tmp_path / "x.so"),
                 str(c), "-lc"])
    assert proc.returncode != 0 and "aligned_alloc" in proc.stderr


def test_weak_too_new_is_a_warning(tc, stubs, tmp_path):
    src = ALIGNED_C.replace("size_t);", "size_t) __attribute__((weak));", 1)
    problems = check_android_elf(build(tc, tmp_path, src, "libw.so", stubs[28], api=28), 24)
    assert [(p.kind, p.severity) for p in problems] == [("symbol-too-new", "warning")]


def test_glibc_headers_give_glibc_symbols(tc, stubs, tmp_path):
    inc = Path("/usr/aarch64-linux-gnu/include")
    if not inc.is_dir():
        _missing(f"no glibc aarch64 headers at {inc}")
    lib = build(tc, tmp_path, GLIBC_C, "libg.so", stubs[24], cflags=["-isystem", str(inc)], no_undefined=False)
    problems = check_android_elf(lib, 24)
    assert _kinds(problems) == [("glibc-symbol", "__errno_location")]
    assert "__errno" in problems[0].message


def test_declared_glibc_symbols_and_missing_needed(tc, stubs, tmp_path):
    src = ("int __isoc99_sscanf(const char *, const char *, ...); int __ctype_b_loc(void); float expf(float);\n"
           "char *__fgets_chk(char *, unsigned long, int, void *);\n"
           "float f(const char *s) { int x; __isoc99_sscanf(s, \"%d\", &x); __fgets_chk(0, 0, 0, 0);"
           " return expf(x) + __ctype_b_loc(); }\n")
    c = tmp_path / "d.c"
    c.write_text(src)
    out = tmp_path / "libd.so"
    flags = [f for f in link_flags(tc, stubs[24], "libd.so") if f != "-Wl,--no-undefined"]
    proc = _run([tc.clang, tc.target(24), *COMPILE_FLAGS, *flags, "-o", str(out), str(c), "-lc"])
    assert proc.returncode == 0, proc.stderr
    assert sorted(_kinds(check_android_elf(out, 24))) == [
        ("glibc-symbol", "__ctype_b_loc"), ("glibc-symbol", "__fgets_chk"), ("glibc-symbol", "__isoc99_sscanf"),
        ("needed-missing", "expf")]


def test_glibc_linked_library_is_refused(tmp_path):
    gcc = shutil.which("aarch64-linux-gnu-gcc")
    if gcc is None:
        _missing("no aarch64-linux-gnu-gcc")
    c = tmp_path / "g.c"
    c.write_text(GLIBC_C + "int puts(const char *);\nint hello(void) { return puts(\"hi\"); }\n")
    out = tmp_path / "libgnu.so"
    proc = _run([gcc, "-shared", "-fPIC", "-O2", "-Wl,-soname,libgnu.so", "-o", str(out), str(c)])
    assert proc.returncode == 0, proc.stderr
    kinds = _kinds(check_android_elf(out, 24))
    assert ("glibc-version", "libc.so.6:GLIBC_2.17") in kinds and ("needed", "libc.so.6") in kinds
    assert ("glibc-symbol", "__errno_location") in kinds


def test_x86_64_is_refused(tc, tmp_path):
    c = tmp_path / "x.c"
    c.write_text("int f(void) { return 1; }\n")
    obj = tmp_path / "x.o"
    proc = _run([tc.clang, "--target=x86_64-linux-gnu", "-c", "-o", str(obj), str(c)])
    assert proc.returncode == 0, proc.stderr
    problems = check_android_elf(obj, 24)
    assert [p.kind for p in problems] == ["refused"] and "AArch64" in problems[0].message
    text = tmp_path / "t.txt"
    text.write_text("not an elf")
    assert [p.kind for p in check_android_elf(text, 24)] == ["refused"]
    arm_obj = tmp_path / "a.o"
    assert _run([tc.clang, tc.target(24), "-c", "-o", str(arm_obj), str(c)]).returncode == 0
    assert "not a linked" in check_android_elf(arm_obj, 24)[0].message
    cut = tmp_path / "cut.so"
    cut.write_bytes(arm_obj.read_bytes()[:80].replace(b"\x01\x00\xb7", b"\x03\x00\xb7", 1))
    assert [p.kind for p in check_android_elf(cut, 24)] == ["refused"]


def test_4k_pages_and_gnu_hash_only(tc, stubs, tmp_path):
    lib = build(tc, tmp_path, OK_C, "lib4k.so", stubs[24],
                extra=["-Wl,-z,max-page-size=4096", "-Wl,--hash-style=gnu"])
    kinds = {k for k, _ in _kinds(check_android_elf(lib, 24))}
    assert kinds == {"load-align"}
    assert {k for k, _ in _kinds(check_android_elf(lib, 21))} == {"load-align", "hash-style"}


def test_extra_exports_and_needed(tc, stubs, tmp_path):
    lrt = tmp_path / "lrt"
    lrt.mkdir()
    (lrt / "s.c").write_text("void LiteRtRunCompiledModel(void) {}\n")
    proc = _run([tc.clang, tc.target(24), "-fPIC", *link_flags(tc, lrt, "libLiteRt.so"), "-o",
                 str(lrt / "libLiteRt.so"), str(lrt / "s.c")])
    assert proc.returncode == 0, proc.stderr
    src = "void LiteRtRunCompiledModel(void);\nvoid run(void) { LiteRtRunCompiledModel(); }\n"
    lib = build(tc, tmp_path, src, "librun.so", stubs[24], extra=[f"-L{lrt}", "-lLiteRt"])
    assert _kinds(check_android_elf(lib, 24)) == [("missing-symbol", "LiteRtRunCompiledModel")]
    assert check_android_elf(lib, 24, extra_exports=["LiteRtRunCompiledModel"]) == []
    only_bionic = ("libc.so", "libm.so", "libdl.so", "liblog.so")
    assert ("needed", "libLiteRt.so") in _kinds(check_android_elf(lib, 24, only_bionic, ["LiteRtRunCompiledModel"]))


def test_pie_executable_without_ndk_crt(tc, stubs, tmp_path):
    (tmp_path / "start.c").write_text(PIE_START_C)
    main = "int puts(const char *);\nint main(int argc, char **argv, char **envp) { puts(argv[0]); return 0; }\n"
    exe = build(tc, tmp_path, main, "ee_hello", stubs[24], cflags=["-fPIE"], shared=False,
                extra=[str(tmp_path / "start.c")])
    s = read_elf_summary(exe)
    assert s["type"] == "executable" and s["pie"] and s["interp"] == "/system/bin/linker64"
    assert s["undefined"] == ["__libc_init", "puts"]
    assert check_android_elf(exe, 24) == []
    bad = build(tc, tmp_path, main, "ee_bad", stubs[24], cflags=["-fPIE"], shared=False,
                extra=[str(tmp_path / "start.c"), "-Wl,--dynamic-linker=/lib/ld-linux-aarch64.so.1"])
    assert _kinds(check_android_elf(bad, 24)) == [("interp", "/lib/ld-linux-aarch64.so.1")]


def test_stub_cache_and_contents(tc, stubs):
    libs = write_stub_libs(stubs[24], 24)   # cached: same paths, no rebuild
    assert [p.name for p in libs] == list(BIONIC_LIBS)
    c24, c28 = (read_elf_summary(stubs[a] / "libc.so") for a in (24, 28))
    assert c24["soname"] == "libc.so" and "malloc" in c24["exports"] and "stderr" in c24["exports"]
    assert "aligned_alloc" not in c24["exports"] and "aligned_alloc" in c28["exports"]
