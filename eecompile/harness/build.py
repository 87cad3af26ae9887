"""Build the harness with CMake: for the host, or cross for aarch64 Linux."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from eecompile.errors import ToolError

AARCH64_TOOLCHAIN = """set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
"""


@dataclass
class BuildResult:
    build_dir: Path
    ee_run: Path
    test_errors: Path
    fuzz: Path | None = None


def find_litert_lib() -> Path:
    """The host libLiteRt.so shipped in the ai-edge-litert wheel."""
    try:
        import ai_edge_litert
    except ImportError as exc:
        raise ToolError("ai-edge-litert is not installed", hint="pip install ai-edge-litert==2.3.0") from exc
    lib = Path(ai_edge_litert.__file__).parent / "libLiteRt.so"
    if not lib.exists():
        raise ToolError(f"{lib} not found", hint="reinstall ai-edge-litert==2.3.0")
    return lib


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ToolError(f"{' '.join(cmd[:2])} failed:\n{tail}", hint="check the compiler and cmake output above")


def build_harness(src_dir: str | Path, build_dir: str | Path | None = None, arch: str = "host",
                  sanitize: bool = False, build_type: str = "Release", fuzz: bool = False) -> BuildResult:
    """Configure and build ``src_dir`` (a directory written by ``generate_harness``)."""
    src = Path(src_dir).resolve()
    suffix = "-fuzz" if fuzz else "-san" if sanitize else ""
    build = Path(build_dir) if build_dir else src / f"build-{arch}{suffix}"
    build.mkdir(parents=True, exist_ok=True)
    if shutil.which("cmake") is None:
        raise ToolError("cmake not found", hint="apt-get install -y cmake")
    args = ["cmake", "-S", str(src), "-B", str(build), f"-DCMAKE_BUILD_TYPE={build_type}",
            f"-DEE_SANITIZE={'ON' if sanitize else 'OFF'}"]
    if fuzz:
        if shutil.which("clang") is None:
            raise ToolError("clang not found (libFuzzer needs it)", hint="apt-get install -y clang")
        args += ["-DCMAKE_C_COMPILER=clang", "-DEE_FUZZ=ON", "-DEE_SANITIZE=ON"]
    if arch == "aarch64":
        if shutil.which("aarch64-linux-gnu-gcc") is None:
            raise ToolError("aarch64-linux-gnu-gcc not found", hint="apt-get install -y crossbuild-essential-arm64")
        tc = build / "aarch64-toolchain.cmake"
        tc.write_text(AARCH64_TOOLCHAIN)
        args.append(f"-DCMAKE_TOOLCHAIN_FILE={tc}")
    elif arch != "host":
        raise ToolError(f"unknown arch {arch!r}", hint="use host or aarch64")
    _run(args, src)
    _run(["cmake", "--build", str(build), "-j", str(os.cpu_count() or 2)], src)
    return BuildResult(build, build / "ee_run", build / "ee_test_errors", build / "ee_fuzz" if fuzz else None)
