"""The two Java pieces of an offline APK build that Debian 12 lacks: ``android.jar`` for API 23
(package ``libandroid-23-java``) and ``dx`` (``dalvik-exchange``), both in Debian's ``bullseye``.

Unpacked once into the download cache from copies checked against pinned sha256 digests (with
``dpkg-deb -x``; nothing is installed system-wide). The copies come first from the folders of
``_fallback_dirs`` (``$EECOMPILE_ANDROID_DEBS``, ``../shared/android`` beside the checkout,
``/work/shared/android``); only what they lack is downloaded, with an apt configuration of its
own (suite bullseye on the mirror this machine already uses, Debian's archive key): bullseye may
leave the mirror. The other tools come from bookworm's packages (``android-sdk``: aapt,
zipalign, apksigner; a JDK: javac, keytool).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from eecompile.errors import ToolError
from eecompile.util import download_cache_dir, sha256_file


@dataclass(frozen=True)
class Deb:
    package: str
    version: str
    sha256: str
    member: str  # the file we need inside the package

    @property
    def filename(self) -> str:
        return f"{self.package}_{self.version}_all.deb"


ANDROID_JAR = Deb("libandroid-23-java", "6.0.1+r72-6",
                  "8af1b6df556971dda0a6da3536ea526a838e0c363afcdd454213d8bce94793e3",
                  "usr/share/java/com.android.android-23.jar")
DX_JAR = Deb("dalvik-exchange", "10.0.0+r36-1",
             "8fc128db7c27253d963eb9b33de79b197162a4749d2ba69019b2fd0664cbd7fe",
             "usr/share/java/com.android.dx-10.0.0.jar")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
SDK_HINT = "apt-get install -y --no-install-recommends android-sdk openjdk-17-jdk-headless"
APT_TIMEOUT_S = 600


@dataclass(frozen=True)
class Sdk:
    android_jar: Path
    dx_jar: Path
    aapt: str
    zipalign: str
    apksigner: str
    javac: str
    java: str
    keytool: str


def _mirror() -> str:
    """The Debian mirror this machine's apt sources already name (deb.debian.org otherwise)."""
    for src in sorted(Path("/etc/apt/sources.list.d").glob("*")) + [Path("/etc/apt/sources.list")]:
        try:
            text = src.read_text()
        except OSError:
            continue
        m = re.search(r"(?m)^\s*(?:URIs:|deb(?:\s+\[[^\]]*\])?)\s+(https?://\S+/debian)/?\s", text + "\n")
        if m:
            return m.group(1)
    return "http://deb.debian.org/debian"


def _apt_download(debs: list[Deb], dest: Path) -> str | None:
    """apt-get download from bullseye with a private configuration; None on success, else why not."""
    if shutil.which("apt-get") is None:
        return "apt-get is not available"
    root = dest / "apt"
    for d in ("lists/partial", "cache/archives/partial"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "sources.list").write_text(f"deb [signed-by={KEYRING}] {_mirror()} bullseye main\n")
    opts = [f"-oDir::Etc::SourceList={root / 'sources.list'}", "-oDir::Etc::SourceParts=/dev/null",
            f"-oDir::State::Lists={root / 'lists'}", f"-oDir::Cache={root / 'cache'}", "-oDebug::NoLocking=1",
            "-qq"] + (["-oAPT::Sandbox::User=root"] if os.geteuid() == 0 else [])
    pins = [f"{d.package}={d.version}" for d in debs]
    for what, cmd in (("apt-get update (bullseye)", ["update"]), ("apt-get download", ["download", *pins])):
        try:
            proc = subprocess.run(["apt-get", *opts, *cmd], cwd=dest, capture_output=True, text=True,
                                  timeout=APT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return f"{what} did not finish in {APT_TIMEOUT_S} s"
        except OSError as exc:
            return f"{what} could not run: {exc}"
        if proc.returncode != 0:
            return f"{what} failed: {proc.stderr.strip()[-300:]}"
    return None


def _fallback_dirs() -> list[Path]:
    """Where verified copies of the two packages are looked for, before any download."""
    dirs = [Path(os.environ["EECOMPILE_ANDROID_DEBS"])] if os.environ.get("EECOMPILE_ANDROID_DEBS") else []
    here = Path(__file__).resolve()
    return dirs + [here.parents[3] / "shared" / "android", Path("/work/shared/android")]


def _extract(deb_file: Path, deb: Deb, out: Path) -> None:
    if shutil.which("dpkg-deb") is None:
        raise ToolError("dpkg-deb is not available to unpack " + deb_file.name, hint="run on Debian or Ubuntu")
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        try:
            proc = subprocess.run(["dpkg-deb", "-x", str(deb_file), tmp], capture_output=True, text=True,
                                  timeout=APT_TIMEOUT_S)
            why = proc.stderr.strip()[-200:] if proc.returncode != 0 else ""
        except subprocess.TimeoutExpired:
            why = f"dpkg-deb did not finish in {APT_TIMEOUT_S} s"
        member = Path(tmp) / deb.member
        if why or not member.is_file():
            raise ToolError(f"cannot unpack {deb.member} from {deb_file.name}: {why or 'not in the package'}",
                            hint="delete the download cache and retry")
        os.replace(member, out)


def _verified(debs: list[Deb], dirs: list[Path]) -> dict[Deb, Path]:
    """The first copy of each package in ``dirs`` whose sha256 is the pinned one."""
    found: dict[Deb, Path] = {}
    for d in debs:
        for where in dirs:
            f = where / d.filename
            if f.is_file() and sha256_file(f) == d.sha256:
                found[d] = f
                break
    return found


def java_pieces(cache: Path | None = None) -> tuple[Path, Path]:
    """android.jar (API 23) and dx's jar: from the cache, else the local copies, else bullseye."""
    root = (cache or download_cache_dir()) / "android-sdk"
    root.mkdir(parents=True, exist_ok=True)
    outs = {d: root / Path(d.member).name for d in (ANDROID_JAR, DX_JAR)}
    stamp = root / "sources.sha256"
    want = "\n".join(d.sha256 for d in outs) + "\n"
    if all(p.is_file() for p in outs.values()) and stamp.is_file() and stamp.read_text() == want:
        return outs[ANDROID_JAR], outs[DX_JAR]
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        found = _verified(list(outs), _fallback_dirs())
        why = None
        if len(found) < len(outs):
            lacking = [d for d in outs if d not in found]
            why = _apt_download(lacking, Path(tmp))
            found |= _verified(lacking, [Path(tmp)])
        missing = [d.filename for d in outs if d not in found]
        if missing:
            raise ToolError(f"cannot get {', '.join(missing)} ({why or 'a download did not match its sha256'}); "
                            f"no verified copy in {', '.join(map(str, _fallback_dirs()))}",
                            hint="put the two .deb files (sha256 in eecompile/android/sdk.py) in a directory and "
                                 "set EECOMPILE_ANDROID_DEBS to it")
        for d, f in found.items():
            _extract(f, d, outs[d])
    stamp.write_text(want)
    return outs[ANDROID_JAR], outs[DX_JAR]


def _jdk_tool(name: str) -> str:
    """javac/java/keytool of a JDK that still compiles for Java 8 (dx reads class files <= 52)."""
    for home in filter(None, [os.environ.get("EECOMPILE_JAVA_HOME"), "/usr/lib/jvm/java-17-openjdk-amd64",
                              os.environ.get("JAVA_HOME")]):
        tool = Path(home) / "bin" / name
        if tool.is_file():
            return str(tool)
    found = shutil.which(name)
    if found is None:
        raise ToolError(f"{name} not found", hint=SDK_HINT)
    return found


def find_sdk(cache: Path | None = None) -> Sdk:
    """Every tool of the offline APK build, or a ToolError naming what to install."""
    tools = {}
    for name in ("aapt", "zipalign", "apksigner"):
        path = shutil.which(name)
        if path is None:
            raise ToolError(f"{name} not found", hint=SDK_HINT)
        tools[name] = path
    android_jar, dx_jar = java_pieces(cache)
    return Sdk(android_jar, dx_jar, tools["aapt"], tools["zipalign"], tools["apksigner"], _jdk_tool("javac"),
               _jdk_tool("java"), _jdk_tool("keytool"))
