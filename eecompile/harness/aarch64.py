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

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from eecompile.errors import ToolError
from eecompile.util import atomic_write_bytes, download_cache_dir, sha256_file

LITERT_VERSION = "2.3.0"
# ai_edge_litert-2.3.0-cp311-cp311-manylinux_2_27_aarch64.whl and the libLiteRt.so inside it
WHEEL_SHA256 = "853fc608f96da87bd5f3458465dfb9abbf18d5ae6b94eceacead407146f175ae"
LIB_SHA256 = "b57687dc234d2b8b0598aef5a9c961ed24263df8f8b3f56adbee1cff618e544b"
SYSROOT = Path("/usr/aarch64-linux-gnu")
QEMU_CPU = "neoverse-n1"
NEOVERSE_N1_CPUINFO = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 50.00\n"
    "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop "
    "asimddp ssbs\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\n"
    "CPU revision\t: 1\n\n" for i in range(2))


def fetch_litert_aarch64(cache_dir: Path | None = None) -> Path:
    """libLiteRt.so for aarch64 Linux, from the ai-edge-litert aarch64 wheel (``pip download``),
    fetched once into a persistent cache and checked against pinned sha256 digests (of the
    wheel and of the library) every time it is used."""
    lib = (cache_dir or download_cache_dir()) / f"litert-{LITERT_VERSION}-aarch64" / "libLiteRt.so"
    if lib.is_file() and sha256_file(lib) == LIB_SHA256:
        return lib
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--platform", "manylinux_2_27_aarch64",
               "--python-version", "3.11", "--no-deps", f"ai-edge-litert=={LITERT_VERSION}", "-d", tmp, "-q"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(Path(tmp).glob(f"ai_edge_litert-{LITERT_VERSION}-*aarch64.whl"))
        if proc.returncode != 0 or not found:
            raise ToolError(f"cannot download the aarch64 ai-edge-litert wheel: {proc.stderr.strip()[-300:]}",
                            hint="check access to PyPI, or put libLiteRt.so (sha256 " + LIB_SHA256[:12] + "...) at "
                                 + str(lib))
        if sha256_file(found[0]) != WHEEL_SHA256:
            raise ToolError(f"{found[0].name} does not match its pinned sha256 {WHEEL_SHA256[:12]}...",
                            hint="PyPI served another file than the one eecompile was tested with; report it")
        with zipfile.ZipFile(found[0]) as z:
            data = z.read("ai_edge_litert/libLiteRt.so")
    if hashlib.sha256(data).hexdigest() != LIB_SHA256:
        raise ToolError("libLiteRt.so in the aarch64 wheel does not match its pinned sha256", hint="report it")
    atomic_write_bytes(lib, data)
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
