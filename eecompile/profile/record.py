"""What a profile records about the device: model and ABI, CPU governors and frequencies,
thermal zones, the energy sources it offers -- read with one POSIX shell script that runs the
same on Linux boards (busybox, coreutils) and Android (toybox), before and after the run --
and whether the run was throttled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eecompile.profile.transports import Transport

RECORD_SCRIPT = r"""
echo "uname_m=$(uname -m)"
echo "uname_r=$(uname -r)"
echo "hostname=$(uname -n)"
if command -v getprop >/dev/null 2>&1; then
  for p in ro.product.model ro.product.manufacturer ro.product.cpu.abi ro.build.version.sdk \
           ro.build.version.release ro.hardware ro.serialno; do
    echo "prop.$p=$(getprop $p)"
  done
fi
[ -r /proc/device-tree/model ] && echo "dt_model=$(tr -d '\000' < /proc/device-tree/model)"
echo "cpu_model=$(grep -m1 -iE '^(model name|hardware|cpu model)' /proc/cpuinfo 2>/dev/null | cut -d: -f2-)"
echo "cpus_online=$(cat /sys/devices/system/cpu/online 2>/dev/null)"
for d in /sys/devices/system/cpu/cpu[0-9]*; do
  c=${d##*/}
  [ -r $d/cpufreq/scaling_governor ] && echo "cpufreq.$c.governor=$(cat $d/cpufreq/scaling_governor)"
  [ -r $d/cpufreq/scaling_cur_freq ] && echo "cpufreq.$c.cur_khz=$(cat $d/cpufreq/scaling_cur_freq)"
  [ -r $d/cpufreq/scaling_max_freq ] && echo "cpufreq.$c.max_khz=$(cat $d/cpufreq/scaling_max_freq)"
  [ -r $d/cpufreq/cpuinfo_max_freq ] && echo "cpufreq.$c.hw_max_khz=$(cat $d/cpufreq/cpuinfo_max_freq)"
done
for z in /sys/class/thermal/thermal_zone[0-9]*; do
  [ -r $z/temp ] && echo "thermal.${z##*/}=$(cat $z/type 2>/dev/null):$(cat $z/temp)"
done
for f in /sys/class/powercap/intel-rapl:[0-9]/energy_uj /sys/class/powercap/intel-rapl:[0-9][0-9]/energy_uj; do
  [ -r $f ] && cat $f >/dev/null 2>&1 && echo "rapl=$f:$(cat ${f%/*}/max_energy_range_uj 2>/dev/null):$(cat ${f%/*}/name 2>/dev/null)"
done
b=/sys/class/power_supply/battery
[ -r $b/current_now ] && [ -r $b/voltage_now ] && echo "battery=$b"
[ -r $b/status ] && echo "battery_status=$(cat $b/status)"
for u in /sys/class/power_supply/usb/online /sys/class/power_supply/ac/online; do
  [ -r $u ] && echo "external_power.${u%/online}=$(cat $u)"
done
for f in /sys/bus/iio/devices/iio:device*/energy_value; do
  [ -r $f ] && echo "rails=$f"
done
echo "record_done=1"
"""


@dataclass
class DeviceRecord:
    """One snapshot of the device (the raw key=value pairs, and what they say)."""

    raw: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "DeviceRecord":
        raw = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key and not key.startswith(" "):
                raw[key.strip()] = value.strip()
        return cls(raw)

    @property
    def complete(self) -> bool:
        return self.raw.get("record_done") == "1"

    @property
    def abi(self) -> str:
        """ro.product.cpu.abi on Android, uname -m elsewhere."""
        return self.raw.get("prop.ro.product.cpu.abi") or self.raw.get("uname_m", "unknown")

    @property
    def is_android(self) -> bool:
        return "prop.ro.product.cpu.abi" in self.raw and bool(self.raw["prop.ro.product.cpu.abi"])

    @property
    def model(self) -> str:
        if self.is_android:
            return f"{self.raw.get('prop.ro.product.manufacturer', '')} {self.raw.get('prop.ro.product.model', '')}".strip()
        return self.raw.get("dt_model") or self.raw.get("cpu_model") or self.raw.get("hostname", "unknown")

    def cpufreq(self, what: str) -> dict[str, int]:
        """cpu name -> value in kHz for ``what`` in cur_khz, max_khz, hw_max_khz."""
        out = {}
        for k, v in self.raw.items():
            parts = k.split(".")
            if len(parts) == 3 and parts[0] == "cpufreq" and parts[2] == what and v.strip().isdigit():
                out[parts[1]] = int(v)
        return out

    def governors(self) -> dict[str, str]:
        return {k.split(".")[1]: v for k, v in self.raw.items() if k.startswith("cpufreq.") and k.endswith(".governor")}

    def thermal_c(self) -> dict[str, float]:
        """zone -> degrees C (sysfs reports milli-degrees)."""
        out = {}
        for k, v in self.raw.items():
            if k.startswith("thermal."):
                kind, _, temp = v.rpartition(":")
                try:
                    out[f"{k.split('.', 1)[1]}:{kind}"] = int(temp) / 1000.0
                except ValueError:
                    continue
        return out

    def energy_sources(self) -> dict[str, list[str]]:
        """What this device can measure energy with: rails (iio energy_value files), battery
        (the power_supply directory), rapl (energy_uj file, max range, name)."""
        out: dict[str, list[str]] = {"rails": [], "battery": [], "rapl": []}
        for k, v in self.raw.items():
            if k in out:
                out[k].append(v)
        return out

    def summary(self) -> dict:
        return {"model": self.model, "abi": self.abi, "android": self.is_android,
                "kernel": self.raw.get("uname_r", ""), "cpus_online": self.raw.get("cpus_online", ""),
                "governors": self.governors(), "cur_khz": self.cpufreq("cur_khz"), "max_khz": self.cpufreq("max_khz"),
                "thermal_c": self.thermal_c(), "battery_status": self.raw.get("battery_status"),
                "android_sdk": self.raw.get("prop.ro.build.version.sdk"),
                "android_release": self.raw.get("prop.ro.build.version.release")}


def read_record(transport: Transport) -> DeviceRecord:
    res = transport.check(transport.shell(RECORD_SCRIPT, timeout=60), "reading the device record")
    rec = DeviceRecord.parse(res.stdout)
    return rec


def trace_files(rec: DeviceRecord, max_files: int = 10) -> list[tuple[str, str]]:
    """(role, path) of the files sampled during the latency phase: every core's current
    frequency and policy cap, and the thermal zones (a throttled run shows in them)."""
    files: list[tuple[str, str]] = []
    for cpu in sorted(rec.cpufreq("cur_khz"), key=lambda c: int(c[3:]) if c[3:].isdigit() else 0):
        files.append((f"cur_khz:{cpu}", f"/sys/devices/system/cpu/{cpu}/cpufreq/scaling_cur_freq"))
    for cpu in rec.cpufreq("max_khz"):
        files.append((f"max_khz:{cpu}", f"/sys/devices/system/cpu/{cpu}/cpufreq/scaling_max_freq"))
        break  # one policy cap is enough to see a cap being lowered on the first core
    for zone in rec.thermal_c():
        files.append((f"thermal:{zone}", f"/sys/class/thermal/{zone.split(':')[0]}/temp"))
    return files[:max_files]


@dataclass
class Throttling:
    throttled: bool
    reasons: list[str]

    def to_dict(self) -> dict:
        return {"throttled": self.throttled, "reasons": self.reasons}


FREQ_DROP = 0.85  # a core's frequency at the end below this share of its frequency at the start
TEMP_RISE_C = 10.0  # a thermal zone warming by more than this during the run


def detect_throttling(trace: list[tuple[float, dict[str, float]]]) -> Throttling:
    """From the samples taken during the latency phase ((t_s, {role: value})): throttled when a
    core's frequency in the last quarter of the run falls below 85% of the first quarter's (medians),
    its policy cap is lowered, or a thermal zone climbs more than 10 C."""
    reasons: list[str] = []
    if not any(v for _, v in trace):
        return Throttling(False, ["not watched: the device exposes no cpufreq or thermal zone to read"])
    if len(trace) < 2:
        return Throttling(False, ["too few samples to tell (a run shorter than two trace periods)"])
    q = max(1, len(trace) // 4)
    head, tail = trace[:q], trace[-q:]
    roles = set().union(*(v.keys() for _, v in trace))

    def med(rows, role):
        vals = sorted(v[role] for _, v in rows if role in v)
        return vals[len(vals) // 2] if vals else None

    for role in sorted(roles):
        a, b = med(head, role), med(tail, role)
        if a is None or b is None:
            continue
        if role.startswith("cur_khz:") and a > 0 and b < FREQ_DROP * a:
            reasons.append(f"{role.split(':', 1)[1]} ran at {b / 1e3:.0f} MHz at the end, {a / 1e3:.0f} MHz at the start")
        elif role.startswith("max_khz:") and b < a:
            reasons.append(f"{role.split(':', 1)[1]}'s frequency cap fell from {a / 1e3:.0f} to {b / 1e3:.0f} MHz")
        elif role.startswith("thermal:") and b - a > TEMP_RISE_C:
            reasons.append(f"{role.split(':', 1)[1]} warmed from {a:.1f} to {b:.1f} C")
    return Throttling(bool(reasons), reasons)
