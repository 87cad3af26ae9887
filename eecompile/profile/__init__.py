"""Profiling: per-exit latency, memory and energy of a bundle measured on the device itself --
this machine, an embedded Linux board over ssh, Android phones over adb, fleets of them, or the
aarch64 build under qemu (correctness only)."""

from eecompile.util import lazy_exports as _lazy_exports

_EXPORTS = {"ProfileOptions": "eecompile.profile.measure", "profile_device": "eecompile.profile.measure",
            "RunSettings": "eecompile.profile.runner", "profile_fleet": "eecompile.profile.fleet",
            "resolve_devices": "eecompile.profile.fleet", "load_profile": "eecompile.profile.schema",
            "check_profile_for": "eecompile.profile.schema", "bundle_profiles": "eecompile.profile.schema"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)
