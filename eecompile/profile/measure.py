"""``profile_device``: measure every exit of a bundle on one device and assemble its profile.

The steps: open the transport, read the device record, pick the runner and library for its
ABI, deploy, run ee_profile (``--repeat`` times; energy blocks in the first run only), read
the record again, then turn the runner's phases into the profile (schema in
``eecompile.profile.schema``). A run cut short (the device went away) keeps what was measured
and is marked incomplete; such a profile is written, never as complete.
"""

from __future__ import annotations

import datetime as _dt
import socket
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eecompile.core.inputs import Inputs
from eecompile.bundle.io import Bundle
from eecompile.errors import ProfileError
from eecompile.profile import energy as en
from eecompile.profile.devices import DeviceSpec
from eecompile.profile.record import DeviceRecord, Throttling, detect_throttling, read_record, trace_files
from eecompile.profile.runner import RunSettings, artifacts_for, deploy, inputs_npy, run_runner, runner_args
from eecompile.profile.schema import SCHEMA, stats_us
from eecompile.profile.transports import DeviceGone, Transport, open_transport
from eecompile.util import sha256_file

ProgressFn = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass
class ProfileOptions:
    settings: RunSettings = field(default_factory=RunSettings)
    repeat: int = 1
    energy: str = "auto"  # "auto": measure where the device can, "off"
    energy_secs: float | None = None  # None: 2 s for rails/RAPL, 10 s for a battery gauge (it updates slowly)
    power_w: float | None = None
    inputs: Inputs | None = None  # PyTorch layout (a tuple for several model inputs); None: the bundle's samples
    runner: Path | None = None
    litert: Path | None = None
    ssh_config: str | None = None
    cleanup: bool = False
    timeout_s: float = 1800.0


def check_options(opts: ProfileOptions) -> None:
    s = opts.settings
    if s.runs < 1:
        raise ProfileError(f"--runs {s.runs}: at least one run per exit is needed", hint="e.g. --runs 100")
    if s.warmup < 0 or s.min_secs < 0 or s.max_secs <= 0 or s.max_secs < s.min_secs:
        raise ProfileError("--warmup, --min-secs and --max-secs must be >= 0 with --max-secs >= --min-secs",
                           hint="e.g. --min-secs 1 --max-secs 60")
    if opts.power_w is not None and not opts.power_w > 0:
        raise ProfileError(f"--power-w {opts.power_w} is not a positive power in watts",
                           hint="give the CPU's active power, e.g. --power-w 2.5")
    if opts.repeat < 1:
        raise ProfileError(f"--repeat {opts.repeat}: at least one run", hint="e.g. --repeat 5")
    if s.threads < 1:
        raise ProfileError(f"--threads {s.threads}: at least one thread", hint="e.g. --threads 1")
    if s.cores is not None:
        try:
            if int(s.cores, 16) <= 0:
                raise ValueError
        except ValueError:
            raise ProfileError(f"--cores {s.cores!r} is not a non-zero hex mask", hint="e.g. --cores 0xf0") from None
    if opts.energy_secs is not None and opts.energy_secs < 0:
        raise ProfileError(f"--energy-secs {opts.energy_secs} is negative", hint="e.g. --energy-secs 10")


def _energy_plan(rec: DeviceRecord, opts: ProfileOptions) -> tuple[str | None, list[tuple[str, str]], list[int], str]:
    """(method, sampled files (role, path), RAPL ranges, why not measured)."""
    if opts.energy == "off":
        return None, [], [], "energy measurement turned off"
    src = rec.energy_sources()
    if src["rails"]:
        return "rails", [(f"rails:{i}", p) for i, p in enumerate(src["rails"][:2])], [], ""
    if src["battery"]:
        status = rec.raw.get("battery_status", "")
        powered = any(v == "1" for k, v in rec.raw.items() if k.startswith("external_power."))
        if status in en.CHARGING_STATES or (powered and status != "Discharging"):
            return None, [], [], f"the battery reports {status or 'external power'}: not measured ({en.CUT_CHARGING_HINT})"
        b = src["battery"][0]
        return "battery", [("battery:current_now", f"{b}/current_now"), ("battery:voltage_now", f"{b}/voltage_now")], \
            [], ""
    if src["rapl"]:
        parsed = [_rapl_entry(e) for e in src["rapl"][:2]]
        return "rapl", [(f"rapl:{i}", path) for i, (path, _) in enumerate(parsed)], [r for _, r in parsed], ""
    return None, [], [], "the device offers no energy counter (no power rails, battery gauge or readable RAPL)"


def _rapl_entry(entry: str) -> tuple[str, int]:
    """'PATH:RANGE:NAME' as the record script writes it (PATH itself has colons: intel-rapl:0)."""
    head, _, tail = entry.partition("/energy_uj:")
    rng = tail.split(":", 1)[0]
    return head + "/energy_uj", int(rng) if rng.isdigit() else 0


def profile_device(bundle: Bundle, device: DeviceSpec, opts: ProfileOptions,
                   progress: ProgressFn | None = None) -> dict:
    """Profile ``bundle`` on one device; returns the profile dict (see eecompile.profile.schema)."""
    check_options(opts)
    transport = open_transport(device, opts.ssh_config)
    try:
        return _profile(bundle, transport, opts, progress or (lambda *_: None))
    finally:
        transport.close()


def _profile(bundle: Bundle, tr: Transport, opts: ProfileOptions, progress: ProgressFn) -> dict:
    m = bundle.manifest
    progress("connect", 0, 1)
    before = read_record(tr)
    if not before.complete:
        raise DeviceGone(f"{tr.device.spec}: the device record came back cut short", hint="check the device")
    abi = "aarch64" if tr.kind == "qemu" else before.abi
    art = artifacts_for(bundle, abi, opts.runner, opts.litert, android=before.is_android)
    method, energy_files, rapl_ranges, no_energy = _energy_plan(before, opts)
    energy_secs = opts.energy_secs if opts.energy_secs is not None else (10.0 if method == "battery" else 2.0)
    if method is None:
        energy_secs = 0.0
    traced = trace_files(before, 16 - len(energy_files))
    sampled = energy_files + traced
    with tempfile.TemporaryDirectory(prefix="eecompile-profile-") as tmp:
        inputs, input_source, n_inputs = inputs_npy(bundle, opts.inputs, Path(tmp))
        progress("deploy", 0, 1)
        dep = deploy(tr, bundle, art, inputs)
        runs, gone = [], None
        for rep in range(opts.repeat):
            settings = RunSettings(**{**opts.settings.__dict__, "energy_secs": energy_secs if rep == 0 else 0.0})
            args = runner_args(dep.dir, settings, [p for _, p in sampled], len(inputs))
            phases, res = run_runner(tr, dep.dir, args, opts.timeout_s, _progress_lines(progress, rep, opts.repeat),
                                     Path(tmp))
            runs.append(phases)
            if res.gone:
                gone = f"the device went away during run {rep + 1} of {opts.repeat}"
                break
            if res.rc != 0:
                raise ProfileError(f"{tr.device.spec}: ee_profile failed: {_tail(res.stderr)}",
                                   hint="the bundle does not load or run on the device; the message above says why")
        after = None
        if gone is None:
            after = read_record(tr)
            if opts.cleanup:
                tr.check(tr.shell(f"rm -rf {dep.dir}"), "removing the deployed files")
    return assemble(bundle, tr, before, after, art, runs, sampled, method, rapl_ranges, no_energy, opts,
                    input_source, n_inputs, dep, gone)


def _progress_lines(progress: ProgressFn, rep: int, n_rep: int):
    def on_line(line: str) -> None:
        parts = line.split()
        if len(parts) == 3 and parts[0] == "progress" and "/" in parts[2]:
            done, _, total = parts[2].partition("/")
            if done.isdigit() and total.isdigit():
                label = parts[1] if n_rep == 1 else f"{parts[1]} (run {rep + 1}/{n_rep})"
                progress(label, int(done), int(total))
    return on_line


def _tail(text: str, n: int = 3) -> str:
    lines = [ln for ln in text.strip().splitlines() if not ln.startswith(("progress ", "INFO: "))]
    return " | ".join(lines[-n:]) or "no message"


def _phase(phases: list[dict], name: str, kind: str | None = None) -> list[dict]:
    return [p for p in phases if p.get("phase") == name and (kind is None or p.get("kind") == kind)]


def _trace(phases: list[dict], sampled: list[tuple[str, str]]) -> list[tuple[float, dict[str, float]]]:
    tr = _phase(phases, "trace", "latency")
    if not tr:
        return []
    rows = []
    for t_ns, *texts in tr[0]["samples"]:
        vals = {}
        for (role, _), text in zip(sampled, texts):
            if role.startswith(("cur_khz:", "max_khz:", "thermal:")) and text.strip().lstrip("-").isdigit():
                v = float(text.strip())
                vals[role] = v / 1000.0 if role.startswith("thermal:") else v
        rows.append((t_ns / 1e9, vals))
    return rows


def assemble(bundle: Bundle, tr: Transport, before: DeviceRecord, after: DeviceRecord | None, art, runs: list[list],
             sampled, method, rapl_ranges, no_energy: str, opts: ProfileOptions, input_source: str, n_inputs: int,
             dep, gone: str | None) -> dict:
    m = bundle.manifest
    first = runs[0] if runs else []
    lat = _phase(first, "latency")
    missing = [name for name in ("load", "first", "latency", "done") if not _phase(first, name)]
    complete = gone is None and not missing
    start = (_phase(first, "start") or [{}])[0]
    hwm = {p["phase"]: p.get("vm_hwm_kb") for p in first if "vm_hwm_kb" in p}
    exits = []
    trunk = None
    if lat:
        for e in lat[0]["exits"]:
            exits.append({"exit": e["exit"], "latency_us": stats_us(e["total"]), "decision_us": stats_us(e["decision"]),
                          "stages_us": [stats_us(s) for s in e["stages"]], "energy": None})
        if "trunk" in lat[0]:
            trunk = {"latency_us": stats_us(lat[0]["trunk"]["total"]),
                     "stages_us": [stats_us(s) for s in lat[0]["trunk"]["stages"]]}
    energy_info: dict = {"method": None, "reason": no_energy}
    blocks = [en.Block(b["kind"], b["exit"], b["duration_ns"] / 1e9, b["n_runs"],
                       [(row[0] / 1e9, row[1:]) for row in b["samples"]]) for b in _phase(first, "energy")]
    if method and blocks and exits:
        columns = {role: j for j, (role, _) in enumerate(sampled)}
        try:
            per_exit, energy_info = en.exit_energies(blocks, method, columns, rapl_ranges)
            energy_info["block_s"] = blocks[0].duration_s
            for pe in per_exit:
                exits[pe.exit_idx]["energy"] = pe.to_dict()
        except ProfileError as exc:
            energy_info = {"method": None, "reason": exc.message}
    if opts.power_w and exits and all(e["energy"] is None for e in exits):
        for pe in en.estimated_energies([e["latency_us"]["p50"] for e in exits], opts.power_w):
            exits[pe.exit_idx]["energy"] = pe.to_dict()
        energy_info = {**energy_info, "method": "power-w", "power_w": opts.power_w}
    repeats = _repeats(runs)
    throttle = detect_throttling(_trace(first, sampled)) if lat else Throttling(False, ["no latency phase"])
    load = (_phase(first, "load") or [{}])[0]
    fst = (_phase(first, "first") or [{}])[0]
    return {
        "schema": SCHEMA,
        "complete": complete,
        "incomplete_reason": None if complete else (gone or f"the run ended before its {', '.join(missing)} phase(s)"),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "bundle": {"name": m.name, "hash": m.models_sha256, "target": m.target, "n_exits": m.n_exits,
                   "macs": [s.macs for s in m.stages]},
        "device": {"id": tr.device_id, "spec": tr.device.spec, "transport": tr.kind, "abi": art.arch,
                   "model": before.model, "emulated": tr.emulated, "before": before.summary(),
                   "after": after.summary() if after else None},
        "timings_meaningful": not tr.emulated,
        "settings": {**opts.settings.__dict__, "repeat": opts.repeat, "inputs": input_source, "n_inputs": n_inputs,
                     "energy_secs": blocks[0].duration_s if blocks else 0.0},
        "runner": {"litert_version": start.get("litert_version"), "abi_version": start.get("abi_version"),
                   "runner_sha256": sha256_file(art.runner), "litert_sha256": sha256_file(art.litert),
                   "deployed_to": dep.dir, "pushed": dep.pushed, "reused": dep.reused},
        "load": {"t_load_ms": load.get("t_load_ns", 0) / 1e6 if load else None,
                 "t_first_ms": fst.get("t_first_ns", 0) / 1e6 if fst else None,
                 "first_stages_us": [v / 1e3 for v in fst.get("stage_ns", [])]},
        "memory": {"vm_hwm_kb": hwm,
                   "growth_load_kb": _diff(hwm, "load", "start"), "growth_runs_kb": _diff(hwm, "latency", "first")},
        "exits": exits,
        "trunk_path": trunk,
        "energy": energy_info,
        "repeats": repeats,
        "throttling": throttle.to_dict(),
    }


def _diff(hwm: dict, a: str, b: str) -> int | None:
    return hwm[a] - hwm[b] if a in hwm and b in hwm and hwm[a] is not None and hwm[b] is not None else None


def _repeats(runs: list[list[dict]]) -> dict:
    """The spread of each exit's p50 latency across repeated invocations (fresh processes)."""
    p50s = []
    for phases in runs:
        lat = _phase(phases, "latency")
        if lat:
            p50s.append([e["total"]["p50"] / 1e3 for e in lat[0]["exits"]])
    if not p50s:
        return {"n": 0}
    per_exit = list(zip(*p50s))
    return {"n": len(p50s), "p50_us": p50s,
            "spread": [{"exit": k, "min_us": min(v), "max_us": max(v), "median_us": statistics.median(v),
                        "rel_range": (max(v) - min(v)) / statistics.median(v) if statistics.median(v) else None}
                       for k, v in enumerate(per_exit)]}
