"""The profile file: a versioned JSON schema, atomic writes, and loading with the checks that
keep a stale profile from being used.

Schema ``eecompile.profile/1`` (one file per device, ``BUNDLE/profiles/<device-id>.json``):

- ``schema``, ``complete`` (false when the run was cut short: ``incomplete_reason`` says why),
  ``created_utc``, ``host`` (the machine that drove the run)
- ``bundle``: ``name``, ``hash`` (``Manifest.models_sha256``: the model files' digests; a
  re-export changes it, so a profile of another export is refused), ``target``, ``n_exits``, ``macs``
- ``device``: ``id``, ``spec`` (as given to --device), ``transport`` (host/ssh/adb/qemu), ``abi``,
  ``model``, ``emulated``, ``before``/``after`` snapshots (governors, current/max frequency per
  core in kHz, thermal zones in C, battery status, Android SDK/release)
- ``timings_meaningful``: false under emulation (qemu): its timings must not be used
- ``settings``: threads, cores, runs, warmup, min/max seconds, repeat, inputs, energy seconds
- ``runner``: LiteRT version, harness ABI, sha256 of the runner and of libLiteRt.so, where it ran
- ``load``: ``t_load_ms`` (session creation: reading, checking, compiling), ``t_first_ms`` (the
  first inference through every stage), ``first_stages_us``
- ``memory``: ``vm_hwm_kb`` at start, load, first, latency, done; ``growth_load_kb``, ``growth_runs_kb``
- ``exits[k]``: ``latency_us`` (an inference that stops at exit k, every exit head on the way
  evaluated: n, mean, tmean (the mean of the central 98%), std, min, p10, p50, p90, p99, max),
  ``decision_us`` (the exit decisions on
  the way), ``stages_us[s]`` (each stage s <= k), ``energy`` (``mj_per_inference``, ``label``
  measured|estimated, ``method`` rails|battery|rapl|power-w, ``active_mw``, ``idle_mw``) or null
- ``trunk_path``: the full path with every early exit dropped (each stage's trunk graph: the
  segment without its head), ``latency_us`` and ``stages_us[s]``; null for bundles without trunks.
  Calibration prices a dropped exit's stage with it.
- ``energy``: the method and idle power, or the reason there is no measured energy
- ``repeats``: each run's per-exit p50 and the spread across runs (fresh processes)
- ``throttling``: ``throttled`` and the reasons (frequency fell, cap lowered, a zone warmed)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from eecompile.bundle.io import Bundle
from eecompile.errors import ProfileError
from eecompile.util import atomic_write_text

SCHEMA = "eecompile.profile/1"
PROFILES_DIR = "profiles"
STAT_KEYS = ("n", "mean", "tmean", "std", "min", "p10", "p50", "p90", "p99", "max")


def stats_us(ns_stats: dict) -> dict:
    """The runner's statistics in ns -> us (n stays a count)."""
    return {k: (ns_stats[k] if k == "n" else ns_stats[k] / 1e3) for k in STAT_KEYS if k in ns_stats}


def profile_path(bundle: Bundle, device_id: str) -> Path:
    return bundle.root / PROFILES_DIR / f"{device_id}.json"


def save_profile(profile: dict, bundle: Bundle, extra: str | os.PathLike | None = None) -> list[Path]:
    """Write the profile atomically into the bundle's profiles/ (and to ``extra``)."""
    text = json.dumps(profile, indent=2)
    paths = [profile_path(bundle, profile["device"]["id"])]
    if extra:
        paths.append(Path(extra))
    for p in paths:
        atomic_write_text(p, text)
    return paths


def load_profile(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        prof = json.loads(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"profile {path} does not exist", hint="run eecompile profile BUNDLE --device ...") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProfileError(f"profile {path} is not readable JSON: {exc}", hint="profile the bundle again") from exc
    if not isinstance(prof, dict) or prof.get("schema") != SCHEMA:
        raise ProfileError(f"{path} is not an {SCHEMA} profile (schema {prof.get('schema') if isinstance(prof, dict) else '?'})",
                           hint="profile the bundle again with this eecompile")
    return prof


def check_profile_for(prof: dict, bundle: Bundle, where: str = "profile", need_timings: bool = True) -> dict:
    """A profile usable for ``bundle``: same model files (hash), complete, real timings."""
    want = bundle.manifest.models_sha256
    got = prof.get("bundle", {}).get("hash")
    if got != want:
        raise ProfileError(f"{where} belongs to another bundle or export ({prof.get('bundle', {}).get('name')}, hash "
                           f"{str(got)[:12]}...; this bundle's is {want[:12]}...)",
                           hint="profile this bundle: eecompile profile BUNDLE --device ...")
    if not prof.get("complete"):
        raise ProfileError(f"{where} is incomplete: {prof.get('incomplete_reason')}", hint="profile the bundle again")
    if need_timings and not prof.get("timings_meaningful", True):
        raise ProfileError(f"{where} was measured under emulation ({prof['device']['spec']}): its timings mean nothing",
                           hint="profile on the device itself")
    return prof


def bundle_profiles(bundle: Bundle) -> list[tuple[Path, dict | None, str]]:
    """Every profile in the bundle: (path, profile or None, status: ok/stale/incomplete/emulated/unreadable)."""
    out = []
    for p in sorted((bundle.root / PROFILES_DIR).glob("*.json")):
        try:
            prof = load_profile(p)
        except ProfileError:
            out.append((p, None, "unreadable"))
            continue
        if prof["bundle"].get("hash") != bundle.manifest.models_sha256:
            status = "stale (another export)"
        elif not prof.get("complete"):
            status = "incomplete"
        elif not prof.get("timings_meaningful", True):
            status = "emulated (correctness only)"
        else:
            status = "ok"
        out.append((p, prof, status))
    return out
