"""Profiling a fleet: several ``--device`` values (or ``adb:all``) profiled in parallel, one
runner per device, one profile each. Every device's profile is saved as soon as it is done,
so a device that fails does not cost the others their results."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from eecompile.bundle.io import Bundle
from eecompile.errors import DeviceError, EecompileError
from eecompile.profile.devices import DeviceSpec, parse_device
from eecompile.profile.measure import ProfileOptions, ProgressFn, check_options, profile_device
from eecompile.profile.report import plot_profile
from eecompile.profile.schema import profile_path, save_profile
from eecompile.profile.transports import resolve_adb


@dataclass
class DeviceOutcome:
    device: DeviceSpec
    profile: dict | None
    paths: list[Path]
    error: EecompileError | None


def resolve_devices(specs: list[str]) -> list[DeviceSpec]:
    """Parse every --device; expand adb and adb:all against adb's device list; no duplicates."""
    if not specs:
        raise DeviceError("no device to profile", hint="pass --device host (or adb, adb:SERIAL, adb:all, "
                                                       "ssh:USER@HOST, qemu-aarch64)")
    out: list[DeviceSpec] = []
    for spec in specs:
        dev = parse_device(spec)
        out += resolve_adb(dev) if dev.kind == "adb" else [dev]
    ids = [d.device_id for d in out]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise DeviceError(f"device {dupes[0]} is given twice", hint="name every device once")
    return out


def profile_fleet(bundle: Bundle, devices: list[DeviceSpec], opts: ProfileOptions, out: str | None = None,
                  progress_for=None) -> list[DeviceOutcome]:
    """Profile every device in parallel (one thread and one runner per device). ``out``: also write
    the profile there (one device) or into that directory (several). ``progress_for(device)``
    returns a progress callback for that device."""
    check_options(opts)

    def one(dev: DeviceSpec) -> DeviceOutcome:
        progress: ProgressFn | None = progress_for(dev) if progress_for else None
        try:
            prof = profile_device(bundle, dev, opts, progress)
        except EecompileError as exc:
            return DeviceOutcome(dev, None, [], exc)
        extra = None
        if out:
            extra = Path(out) / f"{dev.device_id}.json" if len(devices) > 1 else Path(out)
        paths = save_profile(prof, bundle, extra)
        plot_profile(prof, profile_path(bundle, dev.device_id).with_suffix(".png"))
        if extra is not None:
            paths.append(plot_profile(prof, extra.with_suffix(".png")))
        return DeviceOutcome(dev, prof, paths, None)

    if len(devices) == 1:
        return [one(devices[0])]
    with ThreadPoolExecutor(max_workers=len(devices)) as pool:
        return list(pool.map(one, devices))
