#!/usr/bin/env python3
"""Regenerate eecompile/android/bionic/<lib>.arm64.txt from AOSP symbol map files.

Usage:
    python3 scripts/bionic_lists.py --source "aosp-mirror/platform_bionic@<commit>" \
        libc=/path/libc.map.txt libm=/path/libm.map.txt libdl=/path/libdl.map.txt \
        [liblog=/path/liblog.map.txt --source-liblog "repo@commit"] [--out eecompile/android/bionic]

The map files come from AOSP (bionic's libc/libm/libdl, system/logging's liblog); see
eecompile/android/bionic/SOURCE.md. The rules follow AOSP's ndkstubgen (build/soong/cc/symbolfile)
for the public NDK surface of one architecture, plus one conservative addition (version-name
floor, below):

* versions named ``*_PRIVATE`` / ``*_PLATFORM`` and versions tagged ``platform-only`` are dropped;
* a version or symbol carrying a mode tag (``apex``, ``llndk``, ``systemapi``; also ``llndk=...``)
  is dropped: those are not NDK API;
* arch tags (``arm``, ``arm64``, ``riscv64``, ``x86``, ``x86_64``) on a version or symbol restrict it
  to those architectures; a symbol with ``future`` is dropped;
* API level = max(21, version's introduced, symbol's introduced, version-name floor), where an
  ``introduced-arm64=N`` tag overrides a generic ``introduced=N`` on the same line;
* version-name floor: ``LIBC_N`` -> 24, ``LIBC_O`` -> 26, ``LIBLOG_M`` -> 23 ... (the release the
  version node is named after). ndkstubgen ignores names, but liblog's ``LIBLOG_M``/``LIBLOG_O``
  carry no ``introduced`` tag although those symbols appeared in Android M/O. For libc/libm/libdl
  the floor never changes a level (their tags already say as much); the script prints how many
  levels the floor raised.
* ``var`` (data object) and ``weak`` tags are kept as a third column.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ARCHES = ("arm", "arm64", "riscv64", "x86", "x86_64")
MODE_TAGS = ("apex", "llndk", "systemapi")
MIN_API = {"arm64": 21}
CODENAMES = {"L": 21, "M": 23, "N": 24, "O": 26, "OMR1": 27, "P": 28, "Q": 29, "R": 30, "S": 31,
             "T": 33, "U": 34, "V": 35}
LIBS = ("libc", "libm", "libdl", "liblog")


@dataclass
class Entry:
    """One exported symbol of one library for one arch: the API level it appeared at, and flags."""

    name: str
    api: int
    flags: set[str] = field(default_factory=set)


def _tags(comment: str) -> list[str]:
    return comment.split()


def _api_value(value: str) -> int:
    """An ``introduced=`` value: a number or a release codename."""
    if value.isdigit():
        return int(value)
    if value in CODENAMES:
        return CODENAMES[value]
    raise ValueError(f"unknown API level {value!r}: add it to CODENAMES in scripts/bionic_lists.py")


def _omitted(tags: list[str], arch: str) -> bool:
    """True when tags make an item non-NDK (mode tags) or absent on ``arch`` (arch tags, future)."""
    if any(t in MODE_TAGS or t.split("=")[0] in MODE_TAGS for t in tags) or "future" in tags:
        return True
    arch_tags = [t for t in tags if t in ARCHES]
    return bool(arch_tags) and arch not in arch_tags


def _introduced(tags: list[str], arch: str) -> int | None:
    """The level from ``introduced-<arch>=`` (preferred) or ``introduced=``; None without either."""
    generic = specific = None
    for t in tags:
        if t.startswith(f"introduced-{arch}="):
            specific = _api_value(t.split("=", 1)[1])
        elif t.startswith("introduced="):
            generic = _api_value(t.split("=", 1)[1])
    return specific if specific is not None else generic


def _name_floor(version: str) -> int:
    """The API level a version node's name implies (``LIBC_N`` -> 24, ``LIBC_36`` -> 36), else 0."""
    suffix = version.rsplit("_", 1)[1] if "_" in version else ""
    if suffix.isdigit():
        return int(suffix)
    return CODENAMES.get(suffix, 0)


_VERSION_RE = re.compile(r"^([A-Za-z0-9_]+)\s*\{\s*(?:#(.*))?$")
_SYMBOL_RE = re.compile(r"^([A-Za-z0-9_.$]+)\s*;\s*(?:#(.*))?$")


def parse_map(text: str, arch: str = "arm64") -> tuple[dict[str, Entry], int]:
    """Parse one ``*.map.txt``; return the public symbols for ``arch`` and how many the name floor raised."""
    out: dict[str, Entry] = {}
    raised = 0
    version: str | None = None
    skip_version = False
    version_api = 0
    scope = "global"
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if version is None:
            m = _VERSION_RE.match(line)
            if not m:
                raise ValueError(f"line {lineno}: expected 'NAME {{', got {raw!r}")
            version, vtags = m.group(1), _tags(m.group(2) or "")
            skip_version = (version.endswith(("_PRIVATE", "_PLATFORM")) or "platform-only" in vtags
                            or _omitted(vtags, arch))
            version_api = _introduced(vtags, arch) or 0
            scope = "global"
            continue
        if line.startswith("}"):
            version = None
            continue
        if line.split("#")[0].strip() in ("global:", "local:"):
            scope = line.split(":")[0]
            continue
        if skip_version or scope == "local":
            continue
        m = _SYMBOL_RE.match(line)
        if not m:
            raise ValueError(f"line {lineno}: cannot parse {raw!r}")
        name, stags = m.group(1), _tags(m.group(2) or "")
        if _omitted(stags, arch):
            continue
        tagged = max(MIN_API[arch], version_api, _introduced(stags, arch) or 0)
        api = max(tagged, _name_floor(version))
        raised += api > tagged
        flags = {t for t in stags if t in ("var", "weak")}
        old = out.get(name)
        if old is None or api < old.api:
            out[name] = Entry(name, api, flags)
    return out, raised


def render(entries: dict[str, Entry], header: list[str]) -> str:
    """The list file: ``# `` header lines, then ``symbol<TAB>api[<TAB>flags]`` sorted by symbol."""
    lines = [f"# {h}" for h in header]
    for name in sorted(entries):
        e = entries[name]
        lines.append("\t".join([name, str(e.api)] + ([",".join(sorted(e.flags))] if e.flags else [])))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("maps", nargs="+", help="lib=path/to/lib.map.txt, lib one of " + ", ".join(LIBS))
    ap.add_argument("--source", required=True, help="repository@commit the bionic maps were read from")
    ap.add_argument("--source-liblog", default="", help="repository@commit liblog.map.txt was read from")
    ap.add_argument("--arch", default="arm64", choices=sorted(MIN_API))
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "eecompile/android/bionic")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for spec in args.maps:
        lib, _, path = spec.partition("=")
        if lib not in LIBS or not path:
            ap.error(f"{spec!r}: expected lib=path with lib one of {', '.join(LIBS)}")
        entries, raised = parse_map(Path(path).read_text(), args.arch)
        source = args.source_liblog if lib == "liblog" and args.source_liblog else args.source
        header = [f"{lib}.so public NDK symbols for {args.arch}: symbol<TAB>first API level[<TAB>var|weak]",
                  f"source: {source} {lib}/{lib}.map.txt; see SOURCE.md",
                  "generated by scripts/bionic_lists.py; do not edit by hand"]
        (args.out / f"{lib}.{args.arch}.txt").write_text(render(entries, header))
        print(f"{lib}: {len(entries)} symbols ({raised} raised by the version-name floor)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
