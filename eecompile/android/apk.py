"""The demo app as an APK, offline, from Debian's packages (no Gradle, no NDK, no Google Maven).

Steps (also in the README's Android section): the app's install checked
(``app.check_installed``: the stamp matches the files, the generated harness is the installed
bundle's); the manifest merged with the package and SDK levels of ``eecompile-app.json`` (what
AGP's merger does from build.gradle); ``aapt`` writes R.java; ``javac`` (Java 8 class files,
against API 23's android.jar); ``dx`` to classes.dex; ``aapt`` packages the resources and the
assets, every file stored uncompressed (``-0 ''``: the models stay as exported, and the first
start's copy to the files dir is a plain read); classes.dex and ``lib/arm64-v8a/*.so`` added;
``zipalign -p``; ``apksigner`` with a throwaway key; then ``apksigner verify`` and
``aapt dump badging`` read back what the APK claims.

The native library is ``build.py``'s cross-build of the harness + JNI bridge, symbol-checked
against bionic. LiteRT's ``libLiteRt.so`` for Android comes from the LiteRT AAR on Google's
Maven, which this machine cannot reach: pass ``litert`` (the .so, or the .aar to take it from)
to put it into the APK; without it the APK builds and verifies but the app reports that
libLiteRt.so is missing when it starts. This APK has not run on a phone here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

from eecompile.android.app import App, check_installed, load_app
from eecompile.android.build import ABI, JNI_LIB, build_android
from eecompile.android.elfcheck import ElfError, libc_flavour, read_elf_summary
from eecompile.android.sdk import Sdk, find_sdk
from eecompile.errors import HarnessError, OutputPathError, ToolError
from eecompile.util import atomic_write_bytes


@dataclass
class ApkResult:
    apk: Path
    size_bytes: int
    package: str
    native_code: list[str]
    min_sdk: int
    target_sdk: int
    libs: list[str]
    stored_assets: int
    litert_included: bool
    verify: str = ""
    warnings: list[str] = field(default_factory=list)


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolError(f"{what} failed ({Path(cmd[0]).name}):\n{(proc.stdout + proc.stderr).strip()[-1500:]}",
                        hint="see the tool's output above")
    return proc.stdout + proc.stderr


def merged_manifest(app: App) -> str:
    """The app's manifest with package, version and <uses-sdk> from eecompile-app.json."""
    text = app.path("manifest").read_text()
    c = app.config
    if re.search(r"<manifest[^>]*\spackage=", text):
        raise HarnessError(f"{app.path('manifest')} names a package itself",
                           hint=f"keep the package in {app.root / 'eecompile-app.json'} and app/build.gradle only")
    head = (f"<manifest package={quoteattr(c['package'])} android:versionCode=\"{app.version_code}\" "
            f"android:versionName={quoteattr(c.get('version_name', '0'))}")
    text, n = re.subn(r"<manifest(?=\s)", head, text, count=1)
    if n != 1:
        raise HarnessError(f"{app.path('manifest')} has no <manifest> element", hint="restore it from the sources")
    sdk = f"\n    <uses-sdk android:minSdkVersion=\"{app.min_sdk}\" android:targetSdkVersion=\"{app.target_sdk}\" />\n"
    return re.sub(r"(<manifest[^>]*>)", lambda m: m.group(1) + sdk, text, count=1)


def litert_library(path: Path) -> bytes:
    """libLiteRt.so for arm64-v8a Android: the file itself, or taken from the LiteRT AAR."""
    if not path.is_file():
        raise OutputPathError(f"{path} does not exist", hint="pass the arm64-v8a libLiteRt.so or the LiteRT .aar")
    if path.suffix == ".aar":
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith(f"jni/{ABI}/libLiteRt.so")]
            if not names:
                raise HarnessError(f"{path.name} holds no jni/{ABI}/libLiteRt.so",
                                   hint="use com.google.ai.edge.litert:litert's AAR")
            data = z.read(names[0])
    else:
        data = path.read_bytes()
    with tempfile.NamedTemporaryFile(suffix=".so") as f:
        f.write(data)
        f.flush()
        try:
            summary = read_elf_summary(f.name)
            why = ("an executable, not a shared library" if summary["type"] != "shared" else
                   "a glibc (Linux) build" if libc_flavour(f.name) == "glibc" else None)
        except ElfError as exc:
            why = exc.message
    if why is not None:
        raise HarnessError(f"{path.name} is not an arm64 Android library: {why}",
                           hint="the aarch64 libLiteRt.so of the Python wheel is a glibc library; take the one "
                                "in LiteRT's AAR (jni/arm64-v8a/libLiteRt.so)")
    return data


def build_apk(app_dir: str | Path, out_apk: str | Path, litert: Path | None = None, work: Path | None = None,
              sdk: Sdk | None = None) -> ApkResult:
    """Build, sign and verify the app's APK (see the module doc). Needs `eecompile bundle --android` first."""
    app = load_app(app_dir)
    min_sdk = app.min_sdk
    harness = app.path("harness")
    assets = app.path("assets")
    check_installed(app)
    out = Path(out_apk)
    if out.exists() and out.is_dir():
        raise OutputPathError(f"{out} is a directory", hint="give the .apk file to write")
    sdk = sdk or find_sdk()
    litert_bytes = litert_library(Path(litert)) if litert is not None else None
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        w = Path(tmp)
        native = build_android(harness, w / "native", min_sdk, programs=(), jni_source=app.path("cpp") / "ee_jni.c")
        manifest = w / "AndroidManifest.xml"
        manifest.write_text(merged_manifest(app))
        gen, obj, stage = w / "gen", w / "obj", w / "stage"
        for d in (gen, obj, stage / "lib" / ABI):
            d.mkdir(parents=True)
        _run([sdk.aapt, "package", "-f", "-m", "-J", str(gen), "-M", str(manifest), "-S", str(app.path("res")),
              "-I", str(sdk.android_jar)], "aapt (R.java)")
        java = sorted(map(str, app.path("java").rglob("*.java"))) + sorted(map(str, gen.rglob("*.java")))
        _run([sdk.javac, "-source", "8", "-target", "8", "-nowarn", "-Xlint:-options", "-encoding", "UTF-8",
              "-bootclasspath", str(sdk.android_jar), "-d", str(obj), *java], "javac")
        _run([sdk.java, "-cp", str(sdk.dx_jar), "com.android.dx.command.Main", "--dex",
              f"--min-sdk-version={min_sdk}", f"--output={stage / 'classes.dex'}", str(obj)], "dx")
        unsigned = w / "app.unsigned.apk"
        # -0 '': no file is compressed, assets included (the models must stay uncompressed)
        _run([sdk.aapt, "package", "-f", "-0", "", "-M", str(manifest), "-S", str(app.path("res")), "-A",
              str(assets.parent), "-I", str(sdk.android_jar), "-F", str(unsigned)], "aapt (package)")
        shutil.copy(native.outputs["jni"], stage / "lib" / ABI / JNI_LIB)
        if litert_bytes is not None:
            (stage / "lib" / ABI / "libLiteRt.so").write_bytes(litert_bytes)
        libs = sorted(f"lib/{ABI}/{p.name}" for p in (stage / "lib" / ABI).iterdir())
        _run([sdk.aapt, "add", "-0", "", str(unsigned), "classes.dex", *libs], "aapt (add dex and libraries)",
             cwd=stage)
        aligned = w / "app.aligned.apk"
        _run([sdk.zipalign, "-f", "-p", "4", str(unsigned), str(aligned)], "zipalign")
        ks = w / "throwaway.jks"
        _run([sdk.keytool, "-genkeypair", "-keystore", str(ks), "-storepass", "android", "-keypass", "android",
              "-alias", "debug", "-keyalg", "RSA", "-keysize", "2048", "-validity", "10000", "-dname",
              "CN=eecompile throwaway debug key"], "keytool")
        signed = w / "app.apk"
        _run([sdk.apksigner, "sign", "--ks", str(ks), "--ks-pass", "pass:android", "--key-pass", "pass:android",
              "--out", str(signed), str(aligned)], "apksigner sign")
        verify = _run([sdk.apksigner, "verify", "-v", str(signed)], "apksigner verify")
        res = read_apk(signed, sdk)
        res.verify = verify
        res.litert_included = litert_bytes is not None
        res.warnings = [f"{k}: {p.message}" for k, ps in native.warnings.items() for p in ps]
        if not res.litert_included:
            res.warnings.append("no libLiteRt.so in the APK (pass --litert with LiteRT's AAR or its arm64-v8a "
                                "libLiteRt.so): the app starts but reports that LiteRT is missing")
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, signed.read_bytes())
    res.apk = out
    return res


def read_apk(apk: Path, sdk: Sdk) -> ApkResult:
    """What an APK claims (aapt dump badging) and how its assets are stored."""
    badging = _run([sdk.aapt, "dump", "badging", str(apk)], "aapt dump badging")
    pkg = re.search(r"package: name='([^']+)'", badging)
    native = re.search(r"native-code: (.*)", badging)
    sdk_v = re.search(r"sdkVersion:'(\d+)'", badging)
    target = re.search(r"targetSdkVersion:'(\d+)'", badging)
    with zipfile.ZipFile(apk) as z:
        infos = z.infolist()
    compressed = [i.filename for i in infos if i.filename.startswith("assets/") and i.compress_type != zipfile.ZIP_STORED]
    if compressed:
        raise HarnessError(f"{len(compressed)} assets are compressed in {apk.name} (e.g. {compressed[0]})",
                           hint="aapt must be given -0 ''")
    return ApkResult(apk=apk, size_bytes=apk.stat().st_size, package=pkg.group(1) if pkg else "",
                     native_code=re.findall(r"'([^']+)'", native.group(1)) if native else [],
                     min_sdk=int(sdk_v.group(1)) if sdk_v else 0, target_sdk=int(target.group(1)) if target else 0,
                     libs=sorted(i.filename for i in infos if i.filename.startswith("lib/")),
                     stored_assets=sum(i.filename.startswith("assets/") for i in infos), litert_included=False)
