"""Check an arm64 Android ELF built without an NDK against what bionic really offers.

A library linked against hand-made stubs (see ``stubs.py``) links happily even when a header
from glibc redirected a call to a glibc-only symbol, or when a symbol exists on the device only
from a later API level than minSdk; both fail at ``dlopen`` on the phone. This module reads the
ELF (pure Python, ELF64 little-endian, AArch64 only) and reports such problems before a phone is
involved. The bionic export lists come from AOSP map files (``bionic/SOURCE.md``).

Rules (each a ``Problem``; ``severity`` is ``"error"`` unless noted):
* not a linked (ET_DYN/ET_EXEC) ELF64-LE AArch64 file, or corrupt: ``refused``, nothing else checked.
* undefined dynamic symbol: must be exported at ``<= min_sdk`` by a bionic library that is in
  DT_NEEDED, or be in ``extra_exports`` (symbols of libLiteRt.so, libandroid.so...). Otherwise
  ``symbol-too-new`` / ``needed-missing`` / ``missing-symbol``. A *weak* undefined symbol that
  fails this is only a warning: the linker binds it to NULL, which code may test for.
* glibc-only names (``__errno_location``, ``__assert_fail``, ``__ctype_*_loc``, ``__isoc99_*``,
  ``__isoc23_*``, ``__libc_start_main``, glibc crt symbols) and every fortify ``__*_chk`` symbol
  (glibc's fortify ABI is not bionic's: ``__fgets_chk`` takes its arguments in another order),
  weak or not: ``glibc-symbol``. ``__stack_chk_fail`` and ``__cxa_finalize`` are bionic's.
* a DT_VERNEED version named GLIBC*/GLIBCXX*/CXXABI*/GCC_*: ``glibc-version``.
* DT_NEEDED outside ``allowed_needed`` (a path, libstdc++, a glibc soname...): ``needed``.
* PT_LOAD with p_align < 16384 (16 KB-page devices, Android 15+): ``load-align``; a W+X PT_LOAD
  (refused from API 26): ``wx-segment``; PT_GNU_STACK with PF_X: ``exec-stack``; no PT_GNU_STACK:
  ``exec-stack`` warning.
* no hash table, or no DT_HASH while min_sdk < 23 (bionic reads DT_GNU_HASH only from API 23, so
  such a library fails to load on 21/22; an error, not a warning): ``hash-style``.
* DT_TEXTREL/DF_TEXTREL (refused from API 23): ``textrel``. No section headers (refused from
  API 24): ``no-section-headers``. A shared library without DT_SONAME: ``no-soname`` warning.
* PT_TLS in a library with min_sdk < 29 (ELF TLS needs API 29): ``elf-tls``; in an executable,
  p_align < 64 (bionic's TLS slots on arm64): ``elf-tls``.
* executables: ET_EXEC (not PIE): ``not-pie``; PT_INTERP other than /system/bin/linker64: ``interp``.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from eecompile.errors import EecompileError

BIONIC_DIR = Path(__file__).parent / "bionic"
BIONIC_LIBS = ("libc.so", "libm.so", "libdl.so", "liblog.so")
DEFAULT_ALLOWED_NEEDED = ("libc.so", "libm.so", "libdl.so", "liblog.so", "libLiteRt.so", "libandroid.so")
EM_AARCH64, ET_EXEC, ET_DYN = 183, 2, 3
PT_LOAD, PT_DYNAMIC, PT_INTERP, PT_TLS, PT_GNU_STACK = 1, 2, 3, 7, 0x6474E551
PF_X, PF_W = 1, 2
SHT_DYNSYM = 11
DT_NEEDED, DT_HASH, DT_STRTAB, DT_SONAME, DT_TEXTREL, DT_FLAGS = 1, 4, 5, 14, 22, 30
DT_GNU_HASH, DT_VERNEED, DT_VERNEEDNUM, DF_TEXTREL = 0x6FFFFEF5, 0x6FFFFFFE, 0x6FFFFFFF, 4
PAGE_16K, ANDROID_LINKER = 16384, "/system/bin/linker64"

GLIBC_HINTS: tuple[tuple[str, str], ...] = (
    (r"__errno_location", "glibc's errno; bionic's is __errno: avoid errno with glibc headers"),
    (r"__assert_fail", "glibc's assert(); bionic's is __assert2: compile with -DNDEBUG or drop assert()"),
    (r"__ctype_(b|tolower|toupper)_loc", "glibc's <ctype.h> macros: write the character test by hand"),
    (r"__isoc(99|23)_\w+", "glibc's redirect of scanf/strtol: avoid the scanf family, or parse by hand"),
    (r"__\w+_chk", "glibc's _FORTIFY_SOURCE ABI (not bionic's): compile with -U_FORTIFY_SOURCE"),
    (r"__libc_start_main|__libc_csu_\w+|__gmon_start__|_ITM_\w+|__x?stat\w*|__f?xstat\w*|__lxstat\w*",
     "glibc start files or wrappers: link with -nostdlib (no glibc crt objects)"),
)
OTHER_HINTS: tuple[tuple[str, str], ...] = (
    (r"__aarch64_\w+", "outline atomics from libgcc/compiler-rt: compile with -mno-outline-atomics"),
    (r"__emutls_\w+", "emulated TLS: avoid _Thread_local below API 29"),
)


class ElfError(EecompileError):
    """The file is not a linked ELF64 little-endian AArch64 library or executable, or it is corrupt."""


@dataclass(frozen=True)
class Problem:
    """One finding: ``kind`` (see module doc), the symbol or detail, and what to do."""

    kind: str
    symbol_or_detail: str
    message: str
    severity: str = "error"


@cache
def read_symbol_list(lib: str, arch: str = "arm64") -> tuple[tuple[str, int, frozenset[str]], ...]:
    """The committed list of ``lib`` (``libc``...): (symbol, first API level, flags such as ``var``)."""
    path = BIONIC_DIR / f"{lib}.{arch}.txt"
    if not path.exists():
        raise EecompileError(f"no bionic symbol list {path}", hint="regenerate it with scripts/bionic_lists.py")
    rows = []
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, api, *flags = line.split("\t")
            rows.append((name, int(api), frozenset(flags[0].split(",")) if flags else frozenset()))
    return tuple(rows)


def bionic_exports(arch: str = "arm64") -> dict[str, list[tuple[str, int]]]:
    """symbol -> [(soname, first API level)] over libc/libm/libdl/liblog."""
    out: dict[str, list[tuple[str, int]]] = {}
    for soname in BIONIC_LIBS:
        for name, api, _ in read_symbol_list(soname[:-3], arch):
            out.setdefault(name, []).append((soname, api))
    return out


@dataclass
class _Elf:
    """The raw file with its parsed headers; addresses are resolved through the PT_LOAD segments."""

    data: bytes
    etype: int
    phdrs: list[tuple[int, ...]]   # (type, flags, offset, vaddr, paddr, filesz, memsz, align)
    shdrs: list[tuple[int, ...]]   # (name, type, flags, addr, offset, size, link, info, align, entsize)
    dynamic: list[tuple[int, int]]

    def off(self, vaddr: int) -> int:
        """File offset of a virtual address, through the PT_LOAD that maps it."""
        for p in self.phdrs:
            if p[0] == PT_LOAD and p[3] <= vaddr < p[3] + p[5]:
                return vaddr - p[3] + p[2]
        raise ElfError(f"address {vaddr:#x} is not in any PT_LOAD segment", hint="the file is corrupt; rebuild it")

    def dyn(self, tag: int) -> list[int]:
        return [v for t, v in self.dynamic if t == tag]

    def cstr(self, offset: int) -> str:
        end = self.data.find(b"\0", offset)
        return self.data[offset:end if end >= 0 else len(self.data)].decode("utf-8", "replace")

    def dynstr(self, index: int) -> str:
        strtab = self.dyn(DT_STRTAB)
        if not strtab:
            raise ElfError("the dynamic segment has no DT_STRTAB", hint="the file is corrupt; rebuild it")
        return self.cstr(self.off(strtab[0]) + index)


def _parse(path: str | Path) -> _Elf:
    """Read headers, program headers, section headers and the dynamic segment."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ElfError(f"cannot read {path}: {exc.strerror}", hint="check the path") from exc
    if len(data) < 64 or data[:4] != b"\x7fELF":
        raise ElfError(f"{path} is not an ELF file", hint="pass the built .so or executable")
    if data[4] != 2 or data[5] != 1:
        raise ElfError(f"{path} is not ELF64 little-endian (class {data[4]}, data {data[5]})",
                       hint="build for arm64-v8a (clang --target=aarch64-linux-android<minSdk>)")
    etype, machine = struct.unpack_from("<HH", data, 16)
    if machine != EM_AARCH64:
        raise ElfError(f"{path} is for e_machine {machine}, not AArch64 (183)",
                       hint="build for arm64-v8a (clang --target=aarch64-linux-android<minSdk>)")
    if etype not in (ET_EXEC, ET_DYN):
        raise ElfError(f"{path} is not a linked library or executable (e_type {etype}, e.g. an object file)",
                       hint="check the linked .so or executable, not a .o")
    phoff, shoff = struct.unpack_from("<QQ", data, 32)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 54)
    try:
        phdrs = [struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize) for i in range(phnum)]
        shdrs = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)] \
            if shentsize == 64 else []
        dynamic: list[tuple[int, int]] = []
        for p in phdrs:
            if p[0] == PT_DYNAMIC:
                for i in range(p[5] // 16):
                    tag, val = struct.unpack_from("<qQ", data, p[2] + 16 * i)
                    if tag == 0:
                        break
                    dynamic.append((tag, val))
    except struct.error as exc:
        raise ElfError(f"{path} is truncated ({exc})", hint="rebuild it; the file is incomplete") from exc
    return _Elf(data, etype, phdrs, shdrs, dynamic)


def _symbols(elf: _Elf) -> list[tuple[str, int, int]]:
    """Dynamic symbols as (name, binding, section index); binding 1 = GLOBAL, 2 = WEAK."""
    out = []
    for sh in elf.shdrs:
        if sh[1] != SHT_DYNSYM:
            continue
        strtab = elf.shdrs[sh[6]][4]
        for i in range(1, sh[5] // 24):
            name, info, _other, shndx = struct.unpack_from("<IBBH", elf.data, sh[4] + 24 * i)
            if info & 0xF not in (3, 4):   # not SECTION/FILE
                out.append((elf.cstr(strtab + name), info >> 4, shndx))
    return out


def _version_needs(elf: _Elf) -> list[tuple[str, str]]:
    """(file, version) pairs from DT_VERNEED (``.gnu.version_r``)."""
    out = []
    count = elf.dyn(DT_VERNEEDNUM)
    pos = elf.off(elf.dyn(DT_VERNEED)[0]) if elf.dyn(DT_VERNEED) else 0
    for _ in range(count[0] if count and pos else 0):
        _ver, cnt, file_, aux, nxt = struct.unpack_from("<HHIII", elf.data, pos)
        apos = pos + aux
        for _ in range(cnt):
            _hash, _flags, _other, name, anext = struct.unpack_from("<IHHII", elf.data, apos)
            out.append((elf.dynstr(file_), elf.dynstr(name)))
            apos += anext
        pos += nxt
    return out


def read_elf_summary(path: str | Path) -> dict:
    """What the dynamic linker sees: needed, undefined/exports, versions, interp, alignments, hashes.

    Raises ``ElfError`` for a file that is not a linked ELF64-LE AArch64 object, or is corrupt.
    """
    elf = _parse(path)
    try:
        return _summarize(elf)
    except (struct.error, IndexError) as exc:
        raise ElfError(f"{path} is truncated or corrupt ({exc})", hint="rebuild it") from exc


def _summarize(elf: _Elf) -> dict:
    """The summary dict of ``read_elf_summary`` (may raise struct.error/IndexError on a corrupt file)."""
    syms = _symbols(elf)
    interp = [elf.cstr(p[2]).strip() for p in elf.phdrs if p[0] == PT_INTERP]
    stacks = [p for p in elf.phdrs if p[0] == PT_GNU_STACK]
    flags = (elf.dyn(DT_FLAGS) or [0])[0]
    return {
        "type": "executable" if interp or elf.etype == ET_EXEC else "shared",
        "pie": elf.etype == ET_DYN,
        "needed": [elf.dynstr(v) for v in elf.dyn(DT_NEEDED)],
        "soname": elf.dynstr(elf.dyn(DT_SONAME)[0]) if elf.dyn(DT_SONAME) else None,
        "undefined": sorted({n for n, b, s in syms if s == 0 and b in (1, 2) and n}),
        "weak_undefined": sorted({n for n, b, s in syms if s == 0 and b == 2 and n}),
        "exports": sorted({n for n, b, s in syms if s != 0 and b in (1, 2, 10) and n}),
        "version_needs": _version_needs(elf),
        "interp": interp[0] if interp else None,
        "load_alignments": [p[7] for p in elf.phdrs if p[0] == PT_LOAD],
        "wx_segments": sum(1 for p in elf.phdrs if p[0] == PT_LOAD and p[1] & PF_X and p[1] & PF_W),
        "exec_stack": bool(stacks[0][1] & PF_X) if stacks else None,
        "tls_align": next((p[7] for p in elf.phdrs if p[0] == PT_TLS), None),
        "hash_styles": [s for s, t in (("sysv", DT_HASH), ("gnu", DT_GNU_HASH)) if elf.dyn(t)],
        "textrel": bool(elf.dyn(DT_TEXTREL)) or bool(flags & DF_TEXTREL),
        "section_headers": len(elf.shdrs),
    }


def _hint(name: str, table: tuple[tuple[str, str], ...]) -> str | None:
    return next((h for pattern, h in table if re.fullmatch(pattern, name)), None)


def _symbol_problems(s: dict, min_sdk: int, extra: set[str]) -> list[Problem]:
    """Every undefined symbol must be resolvable on a device at min_sdk."""
    bionic, needed, weak = bionic_exports(), set(s["needed"]), set(s["weak_undefined"])
    out = []
    for name in s["undefined"]:
        glibc = _hint(name, GLIBC_HINTS)
        if glibc:
            out.append(Problem("glibc-symbol", name, f"{name} is glibc's ABI, not bionic's: {glibc}."))
            continue
        if name in extra:
            continue
        found = bionic.get(name, [])
        here = sorted((api, lib) for lib, api in found if lib in needed)
        if here and here[0][0] <= min_sdk:
            continue
        sev = "warning" if name in weak else "error"
        weak_note = " It is weak: it binds to NULL there, so the code must test it." if sev == "warning" else ""
        if here:
            api, lib = here[0]
            out.append(Problem("symbol-too-new", name, f"{name} is exported by {lib} only from API {api}, but "
                               f"min_sdk is {min_sdk}: the library will not load on API {min_sdk}..{api - 1}."
                               f"{weak_note} Raise minSdk to {api} or stop using {name}.", sev))
        elif found:
            lib = found[0][0]
            out.append(Problem("needed-missing", name, f"{name} comes from {lib}, which is not in DT_NEEDED: "
                               f"link with -l{lib[3:-3]}.", sev))
        else:
            other = _hint(name, OTHER_HINTS) or ("if a NEEDED library such as libLiteRt.so provides it, pass "
                                                 "its exports as extra_exports; otherwise remove the reference")
            out.append(Problem("missing-symbol", name, f"no bionic library exports {name} (dlopen would fail "
                               f"with 'cannot locate symbol').{weak_note} Fix: {other}.", sev))
    return out


def _layout_problems(s: dict, min_sdk: int, allowed_needed: Iterable[str]) -> list[Problem]:
    """NEEDED, versions, segments, hash tables, relocations, executable rules."""
    out = [Problem("needed", n, f"DT_NEEDED {n} is not among {sorted(allowed_needed)}: it is not on the device or "
                   f"not public; drop the dependency or ship it in the APK and allow it.")
           for n in s["needed"] if n not in allowed_needed]
    out += [Problem("glibc-version", f"{f}:{v}", f"version need {v} from {f} is glibc's: the file was linked "
                    f"against glibc; link against the bionic stubs with -nostdlib.")
            for f, v in s["version_needs"] if re.match(r"GLIBC|CXXABI|GCC_", v)]
    out += [Problem("load-align", hex(a), f"PT_LOAD aligned to {a} bytes (< 16384): it cannot load on 16 KB-page "
                    f"devices (Android 15+); link with -Wl,-z,max-page-size=16384.") for a in s["load_alignments"]
            if a < PAGE_16K]
    if s["wx_segments"]:
        out.append(Problem("wx-segment", str(s["wx_segments"]), "a PT_LOAD is writable and executable, refused "
                           "from API 26: do not use -Wl,--omagic/-N or linker scripts that merge text and data."))
    if s["exec_stack"] is None:
        out.append(Problem("exec-stack", "no PT_GNU_STACK", "no PT_GNU_STACK header: link with "
                           "-Wl,-z,noexecstack.", "warning"))
    elif s["exec_stack"]:
        out.append(Problem("exec-stack", "PT_GNU_STACK RWX", "the stack is marked executable: link with "
                           "-Wl,-z,noexecstack and find the object without .note.GNU-stack."))
    if not s["hash_styles"] or (min_sdk < 23 and "sysv" not in s["hash_styles"]):
        out.append(Problem("hash-style", ",".join(s["hash_styles"]) or "none", f"no DT_HASH, which bionic needs "
                           f"before API 23 (min_sdk {min_sdk}): link with -Wl,--hash-style=both."))
    if s["textrel"]:
        out.append(Problem("textrel", "DT_TEXTREL", "text relocations are refused from API 23: compile every "
                           "object with -fPIC."))
    if not s["section_headers"]:
        out.append(Problem("no-section-headers", "e_shnum=0", "no section headers, refused from API 24: do not "
                           "strip them (plain `llvm-strip` keeps them)."))
    if s["type"] == "shared" and not s["soname"]:
        out.append(Problem("no-soname", "DT_SONAME", "no DT_SONAME: link with -Wl,-soname,lib<name>.so.",
                           "warning"))
    if s["tls_align"] is not None and s["type"] == "shared" and min_sdk < 29:
        out.append(Problem("elf-tls", "PT_TLS", f"ELF TLS needs API 29, min_sdk is {min_sdk}: avoid "
                           "_Thread_local/__thread."))
    if s["tls_align"] is not None and s["type"] == "executable" and s["tls_align"] < 64:
        out.append(Problem("elf-tls", f"PT_TLS align {s['tls_align']}", "bionic refuses an arm64 executable whose "
                           "TLS segment is aligned below 64: align .tdata to 64 or drop the thread-locals."))
    if s["type"] == "executable" and not s["pie"]:
        out.append(Problem("not-pie", "ET_EXEC", "Android runs only position-independent executables: compile "
                           "with -fPIE and link with -pie."))
    if s["type"] == "executable" and s["interp"] != ANDROID_LINKER:
        out.append(Problem("interp", str(s["interp"]), f"interpreter is {s['interp']}, the device's is "
                           f"{ANDROID_LINKER}: link with -Wl,--dynamic-linker={ANDROID_LINKER}."))
    return out


def libc_flavour(path: str | Path) -> str:
    """"glibc" (NEEDED libc.so.6/ld-linux, a GLIBC symbol version or a non-Android interpreter),
    "bionic" (NEEDED libc.so or /system/bin/linker64), else "unknown" (e.g. no libc at all)."""
    s = read_elf_summary(path)
    glibc = (any(re.fullmatch(r"(libc|libm|libdl|libpthread|librt)\.so\.\d+|ld-linux[\w.-]*", n) for n in s["needed"])
             or any(v.startswith("GLIBC") for _, v in s["version_needs"])
             or (s["interp"] is not None and s["interp"] != ANDROID_LINKER))
    if glibc:
        return "glibc"
    if s["interp"] == ANDROID_LINKER or any(n in BIONIC_LIBS for n in s["needed"]):
        return "bionic"
    return "unknown"


def check_android_elf(path: str | Path, min_sdk: int, allowed_needed: Iterable[str] = DEFAULT_ALLOWED_NEEDED,
                      extra_exports: Iterable[str] | None = None) -> list[Problem]:
    """All problems that would stop ``path`` loading (or loading safely) on arm64 Android at ``min_sdk``.

    ``extra_exports``: symbols the non-bionic NEEDED libraries (libLiteRt.so...) export. An empty
    list means the file passes; see the module doc for each rule.
    """
    try:
        summary = read_elf_summary(path)
    except ElfError as exc:
        return [Problem("refused", str(path), f"{exc.message}: {exc.hint}.")]
    allowed = tuple(allowed_needed)
    return _layout_problems(summary, min_sdk, allowed) + _symbol_problems(summary, min_sdk, set(extra_exports or ()))
