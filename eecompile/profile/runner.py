"""The runner on the device: which ``ee_profile`` and ``libLiteRt.so`` a device's ABI needs,
building or fetching them, deploying them with the bundle's model file and the inputs into
``<device tmp>/eecompile/<bundle hash>/`` (files already there with the same sha256 are not
copied again), and running it.

The runner is the C harness's ``ee_profile``, generated for this bundle: a runner of another
bundle is refused on the device (the model file's size and checksum are compiled in).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eecompile.bundle.io import Bundle
from eecompile.errors import DeviceError, ProfileError, ToolError
from eecompile.profile.transports import LineFn, QemuTransport, Result, Transport, _stream
from eecompile.util import cache_dir, sha256_file

# ELF e_machine of each ABI name a device may report (Android's ro.product.cpu.abi, uname -m)
ABI_MACHINE = {"x86_64": 62, "amd64": 62, "aarch64": 183, "arm64-v8a": 183, "arm64": 183,
               "armeabi-v7a": 40, "armv7l": 40, "x86": 3, "i686": 3}
MACHINE_NAME = {62: "x86_64", 183: "aarch64", 40: "arm (32-bit)", 3: "x86 (32-bit)"}


def elf_machine(path: Path) -> int:
    """The ELF e_machine of a file, or a ProfileError saying it is no ELF file."""
    head = path.read_bytes()[:20]
    if len(head) < 20 or head[:4] != b"\x7fELF":
        raise ProfileError(f"{path} is not an ELF executable or library", hint="give the file built for the device")
    return int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")


@dataclass
class Artifacts:
    runner: Path  # ee_profile for the device's ABI
    litert: Path  # libLiteRt.so for the device's ABI
    arch: str


def _build_runner(bundle: Bundle, arch: str) -> Path:
    """ee_profile for ``arch`` ("host", "aarch64" or "android-arm64"), built once per bundle and
    decision rule, and cached."""
    from eecompile.harness.build import build_harness
    from eecompile.harness.generate import c_sources, generate_harness

    src_hash = sha256_file(c_sources() / "src" / "ee_profile.c")[:8] + sha256_file(c_sources() / "src" /
                                                                                    "ee_session.c")[:8]
    m = bundle.manifest
    root = cache_dir() / "runners" / f"{m.models_sha256[:16]}-{m.decision_hash[:8]}-{arch}-{src_hash}"
    exe = root / f"build-{arch}" / "ee_profile"
    if not exe.is_file() and arch == "android-arm64":
        from eecompile.android.build import build_android

        build_android(generate_harness(bundle, root, force=True), root / f"build-{arch}", programs=("ee_profile",))
    elif not exe.is_file():
        build_harness(generate_harness(bundle, root, force=True), arch=arch)
    if not exe.is_file():
        raise ToolError(f"building ee_profile for {arch} produced no executable at {exe}", hint="check cmake's output")
    return exe


def host_arch() -> str:
    import platform

    return {"x86_64": "x86_64", "AMD64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(platform.machine(),
                                                                                               platform.machine())


def runner_in_dir(d: Path, machine: int, android: bool) -> Path:
    """``ee_profile`` in a --runner directory: the directory itself, or the build directory of
    ``eecompile harness -o DIR --build`` for the device (build-android-arm64 for an Android
    phone, build-aarch64 for an arm64 Linux board, build-host otherwise or as the last try)."""
    subdirs = ["build-android-arm64"] if android else ["build-aarch64"] if machine == 183 else []
    tried = [d / "ee_profile", *[d / sub / "ee_profile" for sub in subdirs], d / "build-host" / "ee_profile"]
    for exe in tried:
        if exe.is_file():
            return exe
    raise ProfileError(f"no ee_profile in {d} (looked for {', '.join(str(t.relative_to(d)) for t in tried)})",
                       hint="pass the ee_profile file, or the directory of `eecompile harness BUNDLE -o DIR --arch "
                            f"{'android-arm64' if android else 'aarch64' if machine == 183 else 'host'} --build`")


def artifacts_for(bundle: Bundle, abi: str, runner: Path | None, litert: Path | None, android: bool) -> Artifacts:
    """The runner and LiteRT library for a device of ``abi``: given (--runner/--litert, a runner
    path or a harness build directory), or built/fetched here for Linux x86_64 and aarch64.
    A file built for another ABI is refused before anything is pushed."""
    machine = ABI_MACHINE.get(abi)
    if machine is None:
        raise DeviceError(f"the device reports ABI {abi!r}, which eecompile does not know",
                          hint="pass --runner and --litert built for it")
    if runner is not None and runner.is_dir():
        runner = runner_in_dir(runner, machine, android)
    if android and runner is None and machine != 183:
        raise ProfileError(f"no runner for this Android device ({abi}): eecompile builds for arm64-v8a",
                           hint="pass --runner (ee_profile built for the device) and --litert (its libLiteRt.so)")
    if android and litert is None:
        raise ProfileError("no libLiteRt.so for this Android device",
                           hint="pass --litert with the arm64-v8a libLiteRt.so from the LiteRT AAR "
                                "(com.google.ai.edge.litert:litert:2.3.0, jni/arm64-v8a/libLiteRt.so)")
    if android and runner is None:
        runner = _build_runner(bundle, "android-arm64")
    if runner is None:
        arch = "host" if MACHINE_NAME.get(machine) == host_arch() else "aarch64"
        if arch == "aarch64" and machine != 183:
            raise DeviceError(f"no runner can be built here for ABI {abi}", hint="pass --runner and --litert")
        runner = _build_runner(bundle, arch)
    if litert is None:
        from eecompile.harness.aarch64 import fetch_litert_aarch64
        from eecompile.harness.build import find_litert_lib

        litert = find_litert_lib() if MACHINE_NAME.get(machine) == host_arch() else fetch_litert_aarch64()
    for what, path in (("runner", runner), ("libLiteRt.so", litert)):
        if not path.is_file():
            raise ProfileError(f"{what} {path} does not exist", hint=f"check --{'runner' if what == 'runner' else 'litert'}")
        got = elf_machine(path)
        if got != machine:
            raise ProfileError(f"the {what} {path.name} is built for {MACHINE_NAME.get(got, got)}, the device is "
                               f"{abi}", hint="give files built for the device's ABI (nothing was pushed)")
        if machine == 183:
            _check_libc(path, what, android)
    return Artifacts(runner, litert, abi)


def _check_libc(path: Path, what: str, android: bool) -> None:
    """An arm64 file is built for bionic (Android) or glibc (Linux): refuse the wrong one before
    pushing (on the device it fails with "not found" or a missing symbol, far from the cause)."""
    from eecompile.android.elfcheck import ElfError, libc_flavour

    try:
        flavour = libc_flavour(path)
    except ElfError:
        return
    glibc, bionic = flavour == "glibc", flavour == "bionic"
    if android and glibc:
        raise ProfileError(f"the {what} {path.name} is a Linux (glibc) build; this device runs Android",
                           hint="eecompile harness BUNDLE -o DIR --arch android-arm64 --build builds ee_profile for "
                                "it; libLiteRt.so comes from LiteRT's AAR (nothing was pushed)")
    if not android and bionic:
        raise ProfileError(f"the {what} {path.name} is an Android (bionic) build; this device runs Linux",
                           hint="use --arch aarch64 builds for Linux boards (nothing was pushed)")


def model_files(bundle: Bundle) -> list[str]:
    """The model files the runner opens (the packed file when the bundle has one)."""
    m = bundle.manifest
    return [m.packed.file] if m.packed else sorted({g.file for g in m.all_graphs})


def input_file(i: int) -> str:
    """The runner's file for model input i on the device."""
    return "inputs.npy" if i == 0 else f"inputs{i}.npy"


def inputs_npy(bundle: Bundle, x, out_dir: Path) -> tuple[list[Path], str, int]:
    """The runner's inputs as .npy in the model's layout (NHWC for images), one file per model
    input (inputs.npy, inputs1.npy, ...), float32 (integer token ids and masks stay integers,
    in the model's dtype): the given samples (checked against the bundle's inputs), or the
    bundle's own held-out samples."""
    from eecompile.core.inputs import InputSpec, check_inputs

    source = "given"
    if x is None:
        x, _ = bundle.load_samples()
        source = f"bundle samples ({bundle.manifest.samples.source})"
    specs = bundle.manifest.input
    xs = check_inputs(x, [InputSpec.of_tensor(t) for t in specs], "profile inputs", error=ProfileError)
    paths = []
    for i, (a, spec) in enumerate(zip(xs, specs)):
        path = out_dir / input_file(i)
        np.save(path, np.ascontiguousarray(np.transpose(a, spec.perm_from_torch)).astype(spec.source_dtype))
        paths.append(path)
    return paths, source, int(xs[0].shape[0])


@dataclass
class Deployed:
    dir: str
    pushed: list[str]
    reused: list[str]


def deploy(transport: Transport, bundle: Bundle, art: Artifacts, inputs: list[Path]) -> Deployed:
    """Copy what the runner needs into <device tmp>/eecompile/<bundle hash>/, skipping files whose
    sha256 is already there."""
    remote = f"{transport.base_dir()}/eecompile/{bundle.manifest.models_sha256[:16]}"
    files = {"ee_profile": art.runner, "libLiteRt.so": art.litert, **{p.name: p for p in inputs}}
    files.update({name: bundle.root / name for name in model_files(bundle)})
    if (bundle.root / "decision.hash").is_file():
        files["decision.hash"] = bundle.root / "decision.hash"
    res = transport.shell(f"mkdir -p {shlex.quote(remote)} && cd {shlex.quote(remote)} && "
                          f"(sha256sum {' '.join(shlex.quote(n) for n in files)} 2>/dev/null; true)", timeout=120)
    transport.check(res, "preparing the device directory")
    there = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            there[parts[1].lstrip("*")] = parts[0]
    pushed, reused = [], []
    for name, local in files.items():
        if there.get(name) == sha256_file(local):
            reused.append(name)
            continue
        transport.push(local, f"{remote}/{name}")
        pushed.append(name)
    transport.check(transport.shell(f"chmod 755 {shlex.quote(remote)}/ee_profile", timeout=60), "chmod ee_profile")
    return Deployed(remote, pushed, reused)


@dataclass
class RunSettings:
    threads: int = 1
    cores: str | None = None
    runs: int = 100
    warmup: int = 10
    min_secs: float = 1.0
    max_secs: float = 60.0
    energy_secs: float = 0.0
    sample_ms: float = 20.0
    trace_ms: float = 250.0


def runner_args(dep_dir: str, s: RunSettings, sample_files: list[str], n_inputs: int = 1) -> list[str]:
    inputs = ",".join(f"{dep_dir}/{input_file(i)}" for i in range(n_inputs))
    args = [dep_dir, inputs, "--litert", f"{dep_dir}/libLiteRt.so", "--threads", str(s.threads),
            "--runs", str(s.runs), "--warmup", str(s.warmup), "--min-secs", str(s.min_secs),
            "--max-secs", str(s.max_secs), "--sample-ms", str(s.sample_ms), "--trace-ms", str(s.trace_ms),
            "--energy-secs", str(s.energy_secs)]
    if s.cores:
        args += ["--cores", s.cores]
    for f in sample_files:
        args += ["--sample", f]
    return args


def run_runner(transport: Transport, dep_dir: str, args: list[str], timeout: float, on_line: LineFn | None,
               workdir: Path | None = None) -> tuple[list[dict], Result]:
    """Run ee_profile on the device; returns the phases it completed (its JSON lines) and the result."""
    if isinstance(transport, QemuTransport):
        from eecompile.harness.aarch64 import qemu_command

        res = _stream(qemu_command(Path(dep_dir) / "ee_profile", args, workdir or Path(dep_dir)), timeout, on_line)
    else:
        script = f"cd {shlex.quote(dep_dir)} && LD_LIBRARY_PATH={shlex.quote(dep_dir)} ./ee_profile " + shlex.join(args)
        res = transport.shell(script, timeout=timeout, on_line=on_line)
    phases = []
    for line in res.stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            phases.append(json.loads(line))
        except json.JSONDecodeError:  # the last line of a run cut short
            break
    return phases, res
