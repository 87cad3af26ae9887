"""Energy per inference from what the runner sampled on the device, labelled ``measured`` or
``estimated`` on every figure.

Measured, in this order of preference:
- ``rails``: Pixel-class phones' power rails (``/sys/bus/iio/devices/iio:device*/energy_value``,
  accumulated uW*s per rail); energy of a block = the rails' increase over it.
- ``battery``: the fuel gauge's ``current_now`` (uA) and ``voltage_now`` (uV), sampled during
  the block; power = current x voltage. Vendors disagree on the sign of a discharge current, so
  the sign is taken from the idle baseline (a device on battery discharges while idle), never
  assumed. Not while the battery reports Charging or Full on external power: the gauge then
  measures the charger, and the profile says so instead of calling it measured.
- ``rapl``: Linux's RAPL counters (``/sys/class/powercap/intel-rapl:N/energy_uj``, readable as
  root since Linux 5.10), which wrap at ``max_energy_range_uj``.
Every measured figure subtracts an idle baseline measured the same way (sleeping for as long,
before and after the exits' blocks): what is left is the energy the inferences cost. A block's
power is taken over its last four fifths: in the first fifth, gauges and CPU frequencies still
carry the previous block.
Estimated: ``--power-w W`` (the CPU's active power) times the measured latency.
"""

from __future__ import annotations

from dataclasses import dataclass

from eecompile.errors import ProfileError

CHARGING_STATES = ("Charging", "Full")
CUT_CHARGING_HINT = ("cut charging while profiling: use wireless adb (adb tcpip 5555; adb connect PHONE:5555) and "
                     "unplug the cable, or a USB power blocker; `dumpsys battery unplug` only hides the charger "
                     "from apps. Or pass --power-w W for an estimate")


@dataclass
class Block:
    """One energy block as ee_profile reports it."""

    kind: str  # "idle" or "exit"
    exit_idx: int
    duration_s: float
    n_runs: int
    samples: list[tuple[float, list[str]]]  # (t_s, raw text of each sampled file)


def parse_rapl(texts: list[str]) -> list[int]:
    return [int(t.strip()) for t in texts]


def rapl_delta_uj(values: list[int], max_range_uj: int) -> int:
    """Energy counted between the first and the last reading, across wraparounds (the counter
    restarts at 0 after ``max_range_uj``; consecutive samples are far closer than one wrap)."""
    total = 0
    for a, b in zip(values, values[1:]):
        d = b - a
        if d < 0:
            if max_range_uj <= 0:
                raise ProfileError("a RAPL counter went backwards and its max_energy_range_uj is unknown",
                                   hint="read the energy as root, or pass --power-w for an estimate")
            d += max_range_uj
        total += d
    return total


def parse_rails(text: str) -> dict[str, int]:
    """Pixel's energy_value: ``t=<ms>`` then ``CH<i>(T=<ms>)[RAIL], <uW*s>`` lines -> rail -> uJ."""
    out = {}
    for line in text.splitlines():
        if "[" not in line or "," not in line:
            continue
        name = line[line.index("[") + 1 : line.index("]")]
        try:
            out[name] = int(line.rsplit(",", 1)[1].strip())
        except ValueError:
            continue
    return out


def rails_delta_uj(first: str, last: str) -> dict[str, int]:
    a, b = parse_rails(first), parse_rails(last)
    return {name: b[name] - a[name] for name in a if name in b}


def discharge_sign(idle_currents_ua: list[float]) -> int:
    """+1 when this device reports a discharge as positive current, -1 when as negative, from
    the idle baseline (a device on battery draws current while idle)."""
    if not idle_currents_ua:
        raise ProfileError("no battery current was sampled while idle", hint="check the battery sysfs files")
    mean = sum(idle_currents_ua) / len(idle_currents_ua)
    agree = sum((c > 0) == (mean > 0) and c != 0 for c in idle_currents_ua) / len(idle_currents_ua)
    if abs(mean) < 1000.0 or agree < 0.9:  # under 1 mA, or samples on both sides of zero
        raise ProfileError(f"the idle battery current averages {mean / 1000:.2f} mA with {100 * agree:.0f}% of the "
                           "samples on that side of zero: its sign (discharge) cannot be told",
                           hint="is the device on external power? " + CUT_CHARGING_HINT)
    return 1 if mean > 0 else -1


def battery_power_w(currents_ua: list[float], voltages_uv: list[float], sign: int) -> float:
    """Mean power drawn from the battery (W) over the samples."""
    if not currents_ua or len(currents_ua) != len(voltages_uv):
        raise ProfileError("battery samples are missing", hint="check the battery sysfs files")
    return sum(sign * i * v for i, v in zip(currents_ua, voltages_uv)) / len(currents_ua) * 1e-12


@dataclass
class ExitEnergy:
    exit_idx: int
    mj_per_inference: float
    label: str  # "measured" | "estimated"
    method: str  # "rails" | "battery" | "rapl" | "power-w"
    active_mw: float | None = None
    idle_mw: float | None = None
    n_runs: int = 0

    def to_dict(self) -> dict:
        return {"exit": self.exit_idx, "mj_per_inference": self.mj_per_inference, "label": self.label,
                "method": self.method, "active_mw": self.active_mw, "idle_mw": self.idle_mw, "n_runs": self.n_runs}


SETTLE = 0.2  # the first fifth of a block is left out: gauges and frequencies still carry the last block


def block_power_w(block: Block, method: str, columns: dict[str, int], rapl_ranges: list[int], sign: int) -> float:
    """Mean power (W) the device drew over a block, from the samples after its settling time."""
    t_start = block.samples[0][0] + SETTLE * (block.samples[-1][0] - block.samples[0][0]) if block.samples else 0
    window = [s for s in block.samples if s[0] >= t_start]
    if len(window) < 2 or window[-1][0] <= window[0][0]:
        raise ProfileError(f"a {block.kind} block has {len(block.samples)} samples, too few to measure energy",
                           hint="raise --energy-secs or lower the sampling period")
    span_s = window[-1][0] - window[0][0]
    if method == "rails":
        total = 0
        for name, col in columns.items():
            if name.startswith("rails:"):
                total += sum(rails_delta_uj(window[0][1][col], window[-1][1][col]).values())
        return total * 1e-6 / span_s
    if method == "rapl":
        total = 0
        for j, (name, col) in enumerate((n, c) for n, c in columns.items() if n.startswith("rapl:")):
            total += rapl_delta_uj(parse_rapl([s[1][col] for s in window]), rapl_ranges[j])
        return total * 1e-6 / span_s
    cur = [float(s[1][columns["battery:current_now"]]) for s in window]
    volt = [float(s[1][columns["battery:voltage_now"]]) for s in window]
    return battery_power_w(cur, volt, sign)


def exit_energies(blocks: list[Block], method: str, columns: dict[str, int], rapl_ranges: list[int]
                  ) -> tuple[list[ExitEnergy], dict]:
    """Measured energy per inference for every exit: (block energy - idle power x block time) / runs."""
    idle = [b for b in blocks if b.kind == "idle"]
    exits = [b for b in blocks if b.kind == "exit"]
    if not idle or not exits:
        raise ProfileError("the energy phase lacks its idle or exit blocks", hint="profile again")
    sign = 1
    if method == "battery":
        col = columns["battery:current_now"]
        sign = discharge_sign([float(s[1][col]) for b in idle for s in b.samples])
    idle_w = sum(block_power_w(b, method, columns, rapl_ranges, sign) for b in idle) / len(idle)
    out = []
    for b in exits:
        if b.n_runs <= 0:
            raise ProfileError(f"exit {b.exit_idx}'s energy block ran no inference", hint="raise --energy-secs")
        active_w = block_power_w(b, method, columns, rapl_ranges, sign)
        per_run_j = (active_w - idle_w) * b.duration_s / b.n_runs
        out.append(ExitEnergy(b.exit_idx, per_run_j * 1e3, "measured", method, active_w * 1e3, idle_w * 1e3,
                              b.n_runs))
    return out, {"method": method, "idle_mw": idle_w * 1e3, "discharge_sign": sign if method == "battery" else None}


def estimated_energies(latency_p50_us: list[float], power_w: float) -> list[ExitEnergy]:
    """--power-w W: energy = latency x W (an estimate: the device's own draw is not measured)."""
    if not power_w > 0:
        raise ProfileError(f"--power-w {power_w} is not a positive power in watts", hint="e.g. --power-w 2.5")
    return [ExitEnergy(k, lat * 1e-6 * power_w * 1e3, "estimated", "power-w") for k, lat in enumerate(latency_p50_us)]
