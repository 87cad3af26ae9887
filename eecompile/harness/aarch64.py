"""Run the harness for aarch64 Linux under qemu-user on an x86 host (correctness only:
timings under emulation mean nothing).

Facts this encodes (see shared/FINDINGS.md): binfmt is not active, so qemu-aarch64 is
called explicitly with the cross sysroot; LiteRT's CPU detection crashes on the host's
x86 /proc/cpuinfo, so an aarch64 cpuinfo is bind-mounted in a private mount namespace;
qemu's default ``-cpu max`` gives wrong int8 results, ``neoverse-n1`` is bit-exact, and
the fake cpuinfo lists only features that CPU has. The aarch64 libLiteRt.so comes from
the ai-edge-litert aarch64 wheel (it needs glibc >= 2.34).
"""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

from eecompile.errors import EecompileError

LITERT_VERSION = "2.3.0"
SYSROOT = Path("/usr/aarch64-linux-gnu")
QEMU_CPU = "neoverse-n1"
NEOVERSE_N1_CPUINFO = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 50.00\n"
    "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop "
    "asimddp ssbs\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\n"
    "CPU revision\t: 1\n\n" for i in range(2))


def missing_tools() -> list[str]:
    tools = ["aarch64-linux-gnu-gcc", "qemu-aarch64", "unshare", "cmake"]
    return [t for t in tools if shutil.which(t) is None]


def fetch_litert_aarch64(cache_dir: Path) -> Path:
    """libLiteRt.so for aarch64 Linux, unpacked from the ai-edge-litert wheel (pip download)."""
    lib = cache_dir / f"litert-{LITERT_VERSION}-aarch64" / "libLiteRt.so"
    if lib.exists():
        return lib
    wheels = cache_dir / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = ["python3", "-m", "pip", "download", "--only-binary=:all:", "--platform", "manylinux_2_27_aarch64",
           "--python-version", "3.11", "--no-deps", f"ai-edge-litert=={LITERT_VERSION}", "-d", str(wheels), "-q"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(wheels.glob(f"ai_edge_litert-{LITERT_VERSION}-*aarch64.whl"))
    if proc.returncode != 0 or not found:
        raise EecompileError(f"cannot download the aarch64 ai-edge-litert wheel: {proc.stderr.strip()[-300:]}",
                             hint="check access to PyPI")
    with zipfile.ZipFile(found[0]) as z:
        data = z.read("ai_edge_litert/libLiteRt.so")
    lib.parent.mkdir(parents=True, exist_ok=True)
    tmp = lib.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(lib)
    return lib


def qemu_command(exe: Path, args: list[str], workdir: Path) -> list[str]:
    """A command line that runs ``exe`` under qemu-aarch64 with an aarch64 /proc/cpuinfo."""
    cpuinfo = workdir / "cpuinfo-aarch64"
    cpuinfo.write_text(NEOVERSE_N1_CPUINFO)
    inner = " ".join(["mount", "--bind", str(cpuinfo), "/proc/cpuinfo", "&&", "exec", "qemu-aarch64", "-cpu",
                      QEMU_CPU, "-L", str(SYSROOT), str(exe)] + [_quote(a) for a in args])
    return ["unshare", "-m", "sh", "-c", inner]


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"
