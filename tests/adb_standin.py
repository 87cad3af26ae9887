"""A stand-in Android device fleet behind the real ``adb`` client -- a TEST DOUBLE.

No phone, emulator or adbd was used to build or run this. :class:`AdbStandin` is a small adb
*server* speaking the host protocol of adb 29.0.6 (server version 41, as read from AOSP
system/core/adb: SERVICES.TXT, SYNC.TXT, shell_protocol.h, transport.cpp) on a loopback port, so
the real Debian ``adb`` client, run with ``ANDROID_ADB_SERVER_PORT=<port>``, sends it exactly the
requests a real server would forward to a phone. What it emulates, and how:

* Device list and states (``device``, ``unauthorized``, ``offline``, ``no permissions``) with the
  real server's listing format and FAIL texts (``device unauthorized.``, ``device offline``,
  ``insufficient permissions for device``, ``device 'X' not found``, ``more than one
  device/emulator``).
* Shell (``shell,v2,...:CMD``, legacy ``shell:CMD``, ``exec:CMD``): CMD runs unchanged under
  ``/system/bin/sh -c`` on *this* machine, as uid 2000 ("shell") by default, inside a private
  mount namespace rooted at the device's sandbox directory. Per device, one long-lived holder
  process is made with ``unshare -m``; it bind-mounts the host's /usr, /etc, /dev (and /bin, /lib*
  where they are real directories) read-only and /proc (with a fake /proc/cpuinfo bound on top)
  into the sandbox, then ``chroot``s into it. Each command enters that namespace and root with
  ``nsenter -m -r -w``. The sandbox itself holds /data/local/tmp (writable, persistent),
  /system/bin/{sh,getprop}, /system/build.prop and a fake /sys. Programs are the host's x86_64
  ones; the ``abi`` is a label only.
* Sync (push/pull/stat/list) into and out of the sandbox directory, done by the server itself.
* A fake, *dynamic* sysfs: battery current, Pixel-style ODPM power rails, cpufreq and thermal
  zones are rewritten every ~10 ms from a SYNTHETIC power model driven by the real CPU time
  that the device's shell commands consume (summed over their process trees from
  /proc/<pid>/stat). The numbers are physically motivated (current = idle + per busy core, energy
  = power x time, heat with sustained load) but invented: they measure nothing about a phone.
* Unplug (``srv.unplug``, or timed / at the Nth shell command): the device vanishes from the
  list, its running commands are killed and its open connections closed.

Known deviations from a phone: ``pty`` shells get pipes (no tty); sync writes as root (no
permission checks inside the sandbox); /proc is the host's (``ps`` shows host processes, and the
host's cores are what ``sched_getaffinity`` reports while /sys/devices/system/cpu/online says
``cpus``); sync is v1 only; a device's state is fixed while served; ``host:kill`` is answered but
the stand-in keeps serving. Sandboxes live on /dev/shm (tmpfs) unless ``base_dir`` is given.

Needs root (unshare/mount/chroot), util-linux ``nsenter``/``unshare`` and the Debian ``adb``
package for the client. Run as a script for manual use:
``python3 tests/adb_standin.py --port 5038 --config cfg.json``.
"""

from __future__ import annotations

import argparse
import grp
import json
import logging
import math
import os
import pwd
import random
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

log = logging.getLogger("adb_standin")

ADB_SERVER_VERSION = 41  # adb 29.0.6
STATES = ("device", "unauthorized", "offline", "no permissions")
BATTERY_STATUSES = ("Discharging", "Charging", "Full", "Not charging")
_HELP_URL = "http://developer.android.com/tools/device.html"
_HOST_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "dev")
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_SMOOTH_S = 0.1  # time constant of the CPU-load average that drives the sensors
_SYNC_MAX = 64 * 1024


# ----------------------------------------------------------------------------- device models
@dataclass
class BatteryModel:
    """Synthetic battery: ``current_now = sign * (idle_ua + per_core_ua * busy_cores + noise)``.

    ``sign`` is the sign reported while discharging (-1: the kernel ABI's convention; some vendors
    report +1). ``status`` and ``usb_online`` are reported as given; they do not change the current.
    """

    sign: int = -1
    idle_ua: float = 120_000.0
    per_core_ua: float = 300_000.0
    noise_ua: float = 2_000.0
    voltage_uv: int = 3_850_000
    status: str = "Discharging"
    capacity: int = 75
    usb_online: bool = False

    def __post_init__(self) -> None:
        if self.sign not in (1, -1) or self.status not in BATTERY_STATUSES:
            raise ValueError(f"bad battery model: sign={self.sign} status={self.status!r}")


@dataclass(frozen=True)
class Rail:
    """One ODPM channel: constant ``base_uw`` plus ``cpu_share`` of the active CPU power."""

    name: str
    subsystem: str
    base_uw: float
    cpu_share: float = 0.0


#: The eight channels of a Pixel 6's ``iio:device0`` (names as captured from a real device).
PIXEL6_RAILS: tuple[Rail, ...] = (
    Rail("S10M_VDD_TPU", "Tensor", 12_000), Rail("VSYS_PWR_MODEM", "Cellular", 55_000),
    Rail("VSYS_PWR_RFFE", "Cellular", 6_000), Rail("S2M_VDD_CPUCL2", "CPU", 4_000, 0.5),
    Rail("S3M_VDD_CPUCL1", "CPU", 6_000, 0.3), Rail("S4M_VDD_CPUCL0", "CPU", 15_000, 0.2),
    Rail("S5M_VDD_INT", "SoC", 35_000), Rail("S1M_VDD_MIF", "Memory", 45_000))


@dataclass
class ThermalModel:
    """Zones heat with load: ``ambient + weight * (per_core_mc * busy + climb)``.

    With ``throttle_after_s``, once the load (>= 0.3 core) has lasted that long the temperature
    climbs by ``climb_mc_per_s`` per further second and cpufreq max/cur drop by ``throttle_factor``.
    Idle time winds the sustained-load clock back down at the same rate.
    """

    zones: tuple[tuple[str, float], ...] = (("BIG", 1.0), ("MID", 0.8), ("LITTLE", 0.6),
                                            ("battery", 0.25), ("skin", 0.3))
    ambient_mc: int = 30_000
    per_core_mc: int = 5_000
    throttle_after_s: Optional[float] = None
    climb_mc_per_s: int = 15_000
    throttle_factor: float = 0.5


@dataclass
class FakeDevice:
    """One fake device; every field but ``serial`` is optional.

    serial, state     -- as ``adb devices`` lists it; ``state`` is one of :data:`STATES`.
    abi               -- ro.product.cpu.abi; a label only (programs run natively on this host).
    props             -- extra or overriding getprop properties (see :meth:`all_props`).
    battery, rails, thermal -- the synthetic sensor models; ``rails=()``: no ODPM device.
    cpus, cpu_khz     -- cores in /sys/devices/system/cpu and /proc/cpuinfo; (min, max) kHz.
    features          -- the ``features`` reply; without ``shell_v2`` the client uses ``shell:``.
    uid               -- uid and gid of shell commands (2000: Android's shell user; 0: rooted).
    devpath           -- e.g. ``usb:1-1``, shown by ``devices -l`` as for a USB device.
    cpuinfo           -- /proc/cpuinfo text (default: made from ``abi`` and ``cpus``).
    unplug_after_s    -- vanish this long after the server starts (or after command N starts).
    unplug_at_command -- N: vanish during the Nth shell command, ``unplug_after_s`` (or 0 s) in.
    root              -- the sandbox on the host (default: a fresh one while the server runs).
    """

    serial: str
    state: str = "device"
    abi: str = "x86_64"
    props: dict[str, str] = field(default_factory=dict)
    battery: BatteryModel = field(default_factory=BatteryModel)
    rails: tuple[Rail, ...] = ()
    cpus: int = 4
    cpu_khz: tuple[int, int] = (300_000, 2_400_000)
    thermal: ThermalModel = field(default_factory=ThermalModel)
    features: str = "shell_v2,cmd"
    uid: int = 2000
    devpath: str = ""
    cpuinfo: Optional[str] = None
    unplug_after_s: Optional[float] = None
    unplug_at_command: Optional[int] = None
    root: Optional[Path] = None

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"state must be one of {STATES}, not {self.state!r}")
        v2_sync = {"stat_v2", "ls_v2", "sendrecv_v2"} & set(self.features.split(","))
        if v2_sync:
            raise ValueError(f"the stand-in speaks sync v1 only; drop {sorted(v2_sync)}")

    def all_props(self) -> dict[str, str]:
        """The device's properties: defaults derived from the fields, overridden by ``props``."""
        base = {"ro.product.cpu.abi": self.abi, "ro.product.cpu.abilist": self.abi,
                "ro.product.model": "Standin Phone", "ro.product.manufacturer": "Standin",
                "ro.product.name": f"standin_{self.abi}", "ro.product.device": "standin",
                "ro.product.brand": "standin", "ro.build.version.sdk": "30",
                "ro.build.version.release": "11", "ro.hardware": "standin",
                "ro.serialno": self.serial, "ro.build.type": "user", "ro.debuggable": "0"}
        return {**base, **self.props}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FakeDevice:
        """Build from JSON-like config (``rails: true`` means :data:`PIXEL6_RAILS`)."""
        d = dict(d)
        d["battery"] = BatteryModel(**d.get("battery", {}))
        th = dict(d.get("thermal", {}))
        if "zones" in th:
            th["zones"] = tuple((str(z[0]), float(z[1])) for z in th["zones"])
        d["thermal"] = ThermalModel(**th)
        rails = d.get("rails", ())
        d["rails"] = PIXEL6_RAILS if rails is True else tuple(Rail(**r) for r in rails or ())
        if "cpu_khz" in d:
            d["cpu_khz"] = tuple(d["cpu_khz"])
        if d.get("root"):
            d["root"] = Path(d["root"])
        return cls(**d)


# ----------------------------------------------------------------------------- small helpers
def _mkdirs(path: Path, mode: int = 0o755) -> None:
    """``mkdir -p`` with an explicit mode (independent of the umask) for each created level."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for p in reversed(missing):
        p.mkdir()
        p.chmod(mode)


def _put(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` atomically (temp file + rename): a reader sees old or new, never half."""
    if not path.parent.is_dir():
        _mkdirs(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _proc_stat(pid: int) -> Optional[list[str]]:
    """Fields of /proc/<pid>/stat after the command name (index 0 = state), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2:].decode().split()


def _children(pid: int) -> list[int]:
    """Child pids of every thread of ``pid`` (needs CONFIG_PROC_CHILDREN)."""
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out.extend(int(c) for c in f.read().split())
    except OSError:
        return out  # the process (or a thread) exited while we looked
    return out


def _kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid`` (commands start their own session)."""
    for _ in range(5):
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        members = [p for p in pids if (st := _proc_stat(p)) is not None and st[3] == str(sid)]
        if not members:
            return
        for p in members:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                continue
        time.sleep(0.005)


def _udev_problem() -> str:
    """The server's udev diagnosis (diagnose_usb.cpp), part of the no-permissions texts."""
    try:
        gid = grp.getgrnam("plugdev").gr_gid
    except KeyError:
        return ""
    if gid in os.getgroups() or os.getegid() == gid:
        return "user in plugdev group; are your udev rules wrong?"
    return f"user {pwd.getpwuid(os.getuid()).pw_name} is not in the plugdev group"


def _no_perm_short() -> str:
    problem = _udev_problem()
    return f"no permissions{f' ({problem})' if problem else ''}; see [{_HELP_URL}]"


def _no_perm_long() -> str:
    problem = _udev_problem()
    return (f"insufficient permissions for device{f': {problem}' if problem else ''}\n"
            f"See [{_HELP_URL}] for more information")


def _state_error(state: str) -> str:
    """The FAIL text acquire_one_transport() gives for a device in a non-online state."""
    if state == "unauthorized":
        keys = os.environ.get("ADB_VENDOR_KEYS") or "not set"
        return ("device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is " + keys + "\n"
                "Try 'adb kill-server' if that seems wrong.\n"
                "Otherwise check for a confirmation dialog on your device.")
    return "device offline"


def _cpuinfo(dev: FakeDevice) -> str:
    """Fake /proc/cpuinfo: an ARM-style text for arm ABIs, else the host's first CPU x cpus."""
    if dev.abi.startswith("arm"):
        block = ("BogoMIPS\t: 38.40\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 "
                 "atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: "
                 "0x41\nCPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: 0xd05\n"
                 "CPU revision\t: 0\n")
        return "".join(f"processor\t: {i}\n{block}\n" for i in range(dev.cpus)) + \
            f"Hardware\t: {dev.all_props()['ro.hardware']}\n"
    first = Path("/proc/cpuinfo").read_text().split("\n\n")[0].split("\n")[1:]
    return "".join("\n".join([f"processor\t: {i}", *first]) + "\n\n" for i in range(dev.cpus))


_GETPROP = r"""#!/system/bin/sh
# getprop of the adb stand-in (a test double): properties live in /system/build.prop
if [ $# -eq 0 ]; then
  exec awk '/^[^#]/ { i = index($0, "=")
    print "[" substr($0, 1, i - 1) "]: [" substr($0, i + 1) "]" }' /system/build.prop
fi
exec awk -v k="$1" -v d="$2" 'index($0, k "=") == 1 { v = substr($0, length(k) + 2); f = 1 }
                              END { print (f ? v : d) }' /system/build.prop
"""

_HOLDER = r"""set -e
R=$1; CPUINFO=$2; shift 2
for d in "$@"; do mount --rbind "/$d" "$R/$d"; mount -o remount,bind,ro "$R/$d"; done
mount --rbind /proc "$R/proc"
mount --bind "$CPUINFO" "$R/proc/cpuinfo"
exec chroot "$R" /bin/sh -c 'echo ready; read x'
"""


# ----------------------------------------------------------------------------- sensors
class _Sensors:
    """Turns the CPU time of a device's command trees into its fake sysfs readings."""

    def __init__(self, dev: FakeDevice, root: Path) -> None:
        self.dev, self.sys = dev, root / "sys"
        self.rng = random.Random(dev.serial)
        self.busy = 0.0        # smoothed busy cores
        self.sustained = 0.0   # seconds of sustained load (for throttling)
        self.seen: dict[tuple[int, str], int] = {}   # (pid, starttime) -> CPU ticks counted
        boot_s = time.clock_gettime(time.CLOCK_BOOTTIME)
        self.energy = [r.base_uw * boot_s for r in dev.rails]
        self.cache: dict[str, str] = {}
        self._write_static()

    def _set(self, rel: str, value: object) -> None:
        text = f"{value}\n"
        if self.cache.get(rel) != text:
            _put(self.sys / rel, text)
            self.cache[rel] = text

    def _write_static(self) -> None:
        b, n = self.dev.battery, self.dev.cpus
        bat = "class/power_supply/battery/"
        for name, value in (("type", "Battery"), ("present", 1), ("technology", "Li-ion"),
                            ("status", b.status), ("capacity", b.capacity),
                            ("voltage_now", b.voltage_uv)):
            self._set(bat + name, value)
        self._set("class/power_supply/usb/type", "USB")
        self._set("class/power_supply/usb/online", int(b.usb_online))
        for name in ("online", "possible", "present"):
            self._set(f"devices/system/cpu/{name}", f"0-{n - 1}" if n > 1 else "0")
        lo, hi = self.dev.cpu_khz
        for i in range(n):
            freq = f"devices/system/cpu/cpu{i}/cpufreq/"
            for name, value in (("scaling_governor", "schedutil"), ("cpuinfo_max_freq", hi),
                                ("cpuinfo_min_freq", lo), ("scaling_min_freq", lo),
                                ("scaling_available_governors", "performance powersave schedutil")):
                self._set(freq + name, value)
        for i, (ztype, _) in enumerate(self.dev.thermal.zones):
            self._set(f"class/thermal/thermal_zone{i}/type", ztype)
        if self.dev.rails:
            self._set("bus/iio/devices/iio:device0/name", "s2mpg10-odpm")
            self._set("bus/iio/devices/iio:device0/enabled_rails", "\n".join(
                f"CH{i}[{r.name}]:{r.subsystem}" for i, r in enumerate(self.dev.rails)))
        self.tick([], 0.0)

    def cpu_seconds(self, roots: list[int]) -> float:
        """CPU time (s) used by the trees under ``roots`` since the previous call.

        Every process found is counted from its own start (so late discovery loses nothing);
        the last few ms of a process that exits between two samples are lost.
        """
        ticks, seen, todo = 0, {}, list(roots)
        while todo:
            pid = todo.pop()
            st = _proc_stat(pid)
            if st is None:
                continue
            key, used = (pid, st[19]), int(st[11]) + int(st[12])
            ticks += max(0, used - self.seen.get(key, 0))
            seen[key] = used
            todo.extend(_children(pid))
        self.seen = seen
        return ticks / _CLK_TCK

    def tick(self, roots: list[int], dt: float) -> None:
        """Advance the model by ``dt`` seconds and rewrite the dynamic files."""
        if dt > 0:
            raw = min(self.cpu_seconds(roots) / dt, float(self.dev.cpus))
            self.busy += (1.0 - math.exp(-dt / _SMOOTH_S)) * (raw - self.busy)
        b = self.dev.battery
        current = b.idle_ua + b.per_core_ua * self.busy + self.rng.gauss(0.0, b.noise_ua)
        self._set("class/power_supply/battery/current_now", int(b.sign * current))
        self._rails(dt)
        self._thermal(dt)

    def _rails(self, dt: float) -> None:
        if not self.dev.rails:
            return
        b = self.dev.battery
        active_uw = b.per_core_ua * self.busy * b.voltage_uv * 1e-6
        for i, r in enumerate(self.dev.rails):
            power = r.base_uw * (1.0 + self.rng.gauss(0.0, 0.01)) + r.cpu_share * active_uw
            self.energy[i] += max(0.0, power) * dt
        t = int(time.clock_gettime(time.CLOCK_BOOTTIME) * 1000)
        self._set("bus/iio/devices/iio:device0/energy_value", f"t={t}\n" + "\n".join(
            f"CH{i}(T={t})[{r.name}], {int(e)}" for i, (r, e) in
            enumerate(zip(self.dev.rails, self.energy))))

    def _thermal(self, dt: float) -> None:
        th, (lo, hi) = self.dev.thermal, self.dev.cpu_khz
        self.sustained = self.sustained + dt if self.busy >= 0.3 else max(0.0, self.sustained - dt)
        over = 0.0 if th.throttle_after_s is None else self.sustained - th.throttle_after_s
        rise = th.per_core_mc * self.busy + th.climb_mc_per_s * max(0.0, over)
        for i, (_, weight) in enumerate(th.zones):
            temp = min(th.ambient_mc + weight * rise, 110_000)
            self._set(f"class/thermal/thermal_zone{i}/temp", int(temp) // 100 * 100)
        top = int(hi * th.throttle_factor) if over > 0 else hi
        cur = top if self.busy > 0.05 else lo
        for i in range(self.dev.cpus):
            self._set(f"devices/system/cpu/cpu{i}/cpufreq/scaling_max_freq", top)
            self._set(f"devices/system/cpu/cpu{i}/cpufreq/scaling_cur_freq", cur)


# ----------------------------------------------------------------------------- one device
class _Device:
    """Runtime of a plugged-in FakeDevice: sandbox, namespace holder, commands, connections."""

    def __init__(self, dev: FakeDevice, tid: int, base: Path, nsenter: str) -> None:
        self.dev, self.tid, self.nsenter = dev, tid, nsenter
        self.lock = threading.Lock()
        self.procs: set[subprocess.Popen[bytes]] = set()
        self.conns: set[socket.socket] = set()
        self.commands = 0
        self.gone = False
        self.holder: Optional[subprocess.Popen[bytes]] = None
        self.sensors: Optional[_Sensors] = None
        self.own_root = dev.root is None
        if dev.root is None:
            home = base / (f"{tid}-" + re.sub(r"[^\w.-]", "_", dev.serial))
            _mkdirs(home)
            dev.root = home / "root"
        self.cpuinfo = dev.root.parent / "cpuinfo"
        if dev.state == "device":
            self._build_tree()
            self.sensors = _Sensors(dev, dev.root)
            self._start_holder()

    def _build_tree(self) -> None:
        root = self.dev.root
        assert root is not None
        self.binds: list[str] = []
        for name in _HOST_DIRS:
            host, mine = Path("/") / name, root / name
            if host.is_symlink() and not mine.is_symlink():
                _mkdirs(root)
                mine.symlink_to(os.readlink(host))
            elif host.is_dir() and not host.is_symlink():
                _mkdirs(mine)
                self.binds.append(name)
        for d in ("proc", "sys", "system/bin", "data/local"):
            _mkdirs(root / d)
        _mkdirs(root / "data/local/tmp", 0o771)
        os.chown(root / "data/local/tmp", self.dev.uid, self.dev.uid)
        if not (root / "system/bin/sh").is_symlink():
            (root / "system/bin/sh").symlink_to("/bin/sh")
        _put(root / "system/bin/getprop", _GETPROP, 0o755)
        _put(root / "system/build.prop", "".join(
            f"{k}={v}\n" for k, v in sorted(self.dev.all_props().items())))
        _put(self.cpuinfo, self.dev.cpuinfo or _cpuinfo(self.dev))

    def _start_holder(self) -> None:
        """Start the process that owns the device's mount namespace and chroot."""
        argv = ["unshare", "-m", "sh", "-c", _HOLDER, "holder", str(self.dev.root),
                str(self.cpuinfo), *self.binds]
        self.holder = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, start_new_session=True)
        assert self.holder.stdout is not None and self.holder.stderr is not None
        if self.holder.stdout.readline() != b"ready\n":
            err = self.holder.stderr.read().decode(errors="replace")
            self.holder.wait()
            raise RuntimeError(f"device {self.dev.serial}: cannot set up its mount namespace "
                               f"(needs root, unshare -m, mount --bind, chroot): {err.strip()}")

    def spawn(self, cmd: str, term: Optional[str],
              merge_stderr: bool) -> tuple[subprocess.Popen[bytes], int]:
        """Run ``cmd`` under /system/bin/sh -c in the device's namespace and chroot.

        Returns the process and its 1-based number among the device's shell commands.
        """
        uid = self.dev.uid
        user = "root" if uid == 0 else "shell"
        env = {"PATH": "/system/bin:/system/xbin:/vendor/bin:/usr/local/bin:/usr/bin:/bin",
               "HOME": "/", "HOSTNAME": "localhost", "LOGNAME": user, "USER": user,
               "SHELL": "/system/bin/sh", "TMPDIR": "/data/local/tmp", "ANDROID_DATA": "/data",
               "ANDROID_ROOT": "/system", **({"TERM": term} if term else {})}
        ids = ["-S", str(uid), "-G", str(uid)] if uid else []
        assert self.holder is not None
        argv = [self.nsenter, "-t", str(self.holder.pid), "-m", "-r", "-w", *ids,
                "/system/bin/sh", *(["-c", cmd] if cmd else [])]
        with self.lock:
            if self.gone:
                raise ConnectionError("device gone")
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                                    env=env, start_new_session=True, bufsize=0)
            self.procs.add(proc)
            self.commands += 1
            return proc, self.commands

    def finish(self, proc: subprocess.Popen[bytes]) -> int:
        """Wait for ``proc``; the exit code as adbd reports it (128 + signal when killed)."""
        code = proc.wait()
        with self.lock:
            self.procs.discard(proc)
        return 128 - code if code < 0 else code & 0xFF

    def roots(self) -> list[int]:
        with self.lock:
            return [p.pid for p in self.procs]

    def host_path(self, device_path: str) -> Path:
        """Where a device path lives in the sandbox (``..`` cannot climb above its root)."""
        assert self.dev.root is not None
        return self.dev.root / os.path.normpath("/" + device_path).lstrip("/")

    def unplug(self) -> None:
        """Kill running commands, close connections and the namespace holder."""
        with self.lock:
            self.gone = True
            procs, conns = list(self.procs), list(self.conns)
        for p in procs:
            _kill_session(p.pid)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError as e:
                log.debug("shutdown of a %s connection: %s", self.dev.serial, e)
        if self.holder is not None and self.holder.poll() is None:
            assert self.holder.stdin is not None
            self.holder.stdin.close()
            try:
                self.holder.wait(timeout=2)
            except subprocess.TimeoutExpired:
                _kill_session(self.holder.pid)
                self.holder.wait()


# ----------------------------------------------------------------------------- wire helpers
def _recv_exact(sock: socket.socket, n: int) -> Optional[bytes]:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _read_request(sock: socket.socket) -> Optional[str]:
    head = _recv_exact(sock, 4)
    body = _recv_exact(sock, int(head, 16)) if head else None
    return body.decode(errors="surrogateescape") if body is not None else None


def _okay(sock: socket.socket, payload: Optional[str] = None) -> None:
    data = b"" if payload is None else payload.encode()
    sock.sendall(b"OKAY" + (b"" if payload is None else b"%04x" % len(data) + data))


def _fail(sock: socket.socket, message: str) -> None:
    data = message.encode()
    sock.sendall(b"FAIL" + b"%04x" % len(data) + data)


def _sync_fail(sock: socket.socket, message: str) -> None:
    data = message.encode()
    sock.sendall(b"FAIL" + struct.pack("<I", len(data)) + data)


class _Out:
    """Thread-safe writer of shell output: v2 packets (id, LE length, data) or raw bytes."""

    def __init__(self, sock: socket.socket, v2: bool) -> None:
        self.sock, self.v2, self.lock, self.ok = sock, v2, threading.Lock(), True

    def send(self, stream: int, data: bytes) -> bool:
        frame = struct.pack("<BI", stream, len(data)) + data if self.v2 else data
        with self.lock:
            try:
                self.sock.sendall(frame)
            except OSError:
                self.ok = False
        return self.ok


# ----------------------------------------------------------------------------- the server
class AdbStandin:
    """A fake adb server on a free loopback port serving ``devices`` (a context manager).

    ``requests`` records every request as (target serial or None, service string);
    ``killed`` is set when a client sent ``host:kill`` (the stand-in keeps serving).
    """

    def __init__(self, devices: list[FakeDevice], port: int = 0, host: str = "127.0.0.1",
                 base_dir: Optional[Path] = None, keep: bool = False,
                 tick_s: float = 0.01) -> None:
        if len({d.serial for d in devices}) != len(devices):
            raise ValueError("serials must be unique")
        self.devices, self.keep, self.tick_s = list(devices), keep, tick_s
        self.requests: list[tuple[Optional[str], str]] = []
        self.killed = threading.Event()
        self._addr = (host, port)
        self._base_arg = base_dir
        self._live: dict[str, _Device] = {}
        self._plugged: list[_Device] = []
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._timers: list[threading.Timer] = []
        self.port = 0

    @property
    def env(self) -> dict[str, str]:
        """Environment for the adb client: point it at this server."""
        return {"ANDROID_ADB_SERVER_PORT": str(self.port)}

    # lifecycle
    def __enter__(self) -> AdbStandin:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Build the sandboxes, start the namespaces, sensors and the listening socket."""
        nsenter = shutil.which("nsenter")
        if os.geteuid() != 0 or nsenter is None or shutil.which("unshare") is None:
            raise RuntimeError("AdbStandin needs root and util-linux nsenter/unshare")
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # tmpfs: cheap sensor writes
        self.base = Path(self._base_arg or tempfile.mkdtemp(prefix="adb-standin-", dir=shm))
        _mkdirs(self.base)
        self.base.chmod(0o755)
        try:
            for tid, dev in enumerate(self.devices, start=1):
                self._live[dev.serial] = _Device(dev, tid, self.base, nsenter)
                self._plugged.append(self._live[dev.serial])
                if dev.unplug_after_s is not None and dev.unplug_at_command is None:
                    self._unplug_later(dev.serial, dev.unplug_after_s)
            self._listener = socket.create_server(self._addr)
            self._listener.settimeout(0.2)
            self.port = self._listener.getsockname()[1]
        except BaseException:
            self.stop()
            raise
        self._spawn(self._accept_loop)
        self._spawn(self._sensor_loop)

    def stop(self) -> None:
        """Stop serving, kill every command, drop the namespaces and (unless keep) the files."""
        self._stop.set()
        for timer in self._timers:
            timer.cancel()
        for serial in list(self._live):
            self.unplug(serial)
        if hasattr(self, "_listener"):
            try:
                self._listener.shutdown(socket.SHUT_RDWR)   # wakes accept() at once
            except OSError as e:
                log.debug("listener shutdown: %s", e)
        for t in self._threads:
            t.join(timeout=5)
        if hasattr(self, "_listener"):
            self._listener.close()
        if self.keep:
            return
        for dev in self._plugged:
            if dev.own_root:
                shutil.rmtree(dev.dev.root.parent, ignore_errors=True)  # type: ignore[union-attr]
                dev.dev.root = None
        if self._base_arg is None and hasattr(self, "base"):
            shutil.rmtree(self.base, ignore_errors=True)

    def unplug(self, serial: str) -> None:
        """Make ``serial`` vanish: unlisted, its commands killed, its connections closed."""
        with self._lock:
            dev = self._live.pop(serial, None)
            self._lock.notify_all()
        if dev is not None:
            dev.unplug()

    def _unplug_later(self, serial: str, delay: float) -> None:
        timer = threading.Timer(delay, self.unplug, (serial,))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _spawn(self, target: Callable[..., None], *args: object, track: bool = True) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        if track:
            self._threads.append(t)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError as e:
                if not self._stop.is_set():
                    log.warning("accept failed: %s", e)
                return
            conn.settimeout(None)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._spawn(self._serve, conn, track=False)

    def _sensor_loop(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.tick_s):
            now = time.monotonic()
            dt, last = now - last, now
            with self._lock:
                devs = list(self._live.values())
            for dev in devs:
                if dev.sensors is not None and not dev.gone:
                    try:
                        dev.sensors.tick(dev.roots(), dt)
                    except OSError as e:
                        log.warning("sensor update of %s failed: %s", dev.dev.serial, e)

    # device selection
    def _acquire(self, serial: Optional[str], tid: int = 0,
                 any_state: bool = False) -> tuple[Optional[_Device], str]:
        """acquire_one_transport(): the one device meant, or the real server's error text."""
        error = (f"no device with transport id '{tid}'" if tid else
                 f"device '{serial}' not found" if serial else "no devices/emulators found")
        found: Optional[_Device] = None
        with self._lock:
            for dev in sorted(self._live.values(), key=lambda d: d.dev.serial):
                if dev.dev.state == "no permissions":
                    error = _no_perm_long()
                elif (tid and dev.tid == tid) or (not tid and serial in (None, dev.dev.serial)):
                    if found is not None:
                        return None, "more than one device/emulator"
                    found = dev
        if found is not None and found.dev.state != "device" and not any_state:
            return None, _state_error(found.dev.state)
        return found, error if found is None else "success"

    def _listing(self, long: bool) -> str:
        lines = []
        with self._lock:
            devs = sorted(self._live.values(), key=lambda d: d.dev.serial)
        for dev in devs:
            d = dev.dev
            state = _no_perm_short() if d.state == "no permissions" else d.state
            if not long:
                lines.append(f"{d.serial}\t{state}\n")
                continue
            line = f"{d.serial:<22} {state}" + (f" {d.devpath}" if d.devpath else "")
            if d.state == "device":
                p = d.all_props()
                model = re.sub(r"[^A-Za-z0-9]", "_", p["ro.product.model"])
                line += f" product:{p['ro.product.name']} model:{model} " \
                        f"device:{p['ro.product.device']}"
            lines.append(f"{line} transport_id:{dev.tid}\n")
        return "".join(lines)

    def _split_serial(self, rest: str) -> tuple[str, str]:
        """Split ``<serial>:<service>`` (serials may contain ``host:port`` colons)."""
        for serial in sorted((d.serial for d in self.devices), key=len, reverse=True):
            if rest.startswith(serial + ":"):
                return serial, rest[len(serial) + 1:]
        m = re.match(r"((?:tcp:)?[^:]+:\d+):(.*)$", rest)
        if m:
            return m.group(1), m.group(2)
        serial, _, service = rest.partition(":")
        return serial, service

    def _record(self, serial: Optional[str], service: str) -> None:
        with self._lock:
            self.requests.append((serial, service))

    # connections
    def _serve(self, sock: socket.socket) -> None:
        dev: Optional[_Device] = None
        try:
            while not self._stop.is_set():
                service = _read_request(sock)
                if service is None:
                    return
                if dev is None and service.startswith("host"):
                    dev = self._host(sock, service)
                    if dev is None:
                        return
                    with dev.lock:
                        dev.conns.add(sock)
                    continue
                self._record(dev.dev.serial if dev else None, service)
                if dev is None:
                    _fail(sock, "device offline (no transport)")
                elif service.startswith(("shell", "exec:")):
                    self._shell(sock, dev, service)
                elif service == "sync:":
                    self._sync(sock, dev)
                else:
                    _fail(sock, "closed")
                return
        except (OSError, ValueError) as e:
            log.debug("connection ended: %s", e)
        finally:
            if dev is not None:
                with dev.lock:
                    dev.conns.discard(sock)
            sock.close()

    def _host(self, sock: socket.socket, service: str) -> Optional[_Device]:
        """Handle a host request; returns the device when the connection switched to it."""
        serial: Optional[str] = None
        tid = 0
        if service.startswith("host-serial:"):
            serial, rest = self._split_serial(service[len("host-serial:"):])
        elif service.startswith("host-transport-id:"):
            num, _, rest = service[len("host-transport-id:"):].partition(":")
            tid = int(num) if num.isdigit() else -1
        else:
            rest = service.partition(":")[2]
        for prefix in ("tport:serial:", "transport:"):
            if rest.startswith(prefix):
                serial = rest[len(prefix):]
        if rest.startswith("transport-id:"):
            tid = int(rest[len("transport-id:"):]) if rest[13:].isdigit() else -1
        self._record(serial, service)
        if rest == "kill":
            self.killed.set()
            _okay(sock)
        elif rest == "version":
            _okay(sock, f"{ADB_SERVER_VERSION:04x}")
        elif rest in ("devices", "devices-l"):
            _okay(sock, self._listing(rest == "devices-l"))
        elif rest == "host-features":
            _okay(sock, "shell_v2,cmd,push_sync")
        elif rest.startswith(("tport:", "transport")):
            dev, error = self._acquire(serial, tid)
            if dev is None:
                _fail(sock, error)
                return None
            _okay(sock)
            if rest.startswith("tport:"):
                sock.sendall(struct.pack("<Q", dev.tid))
            return dev
        elif rest in ("features", "get-state", "get-serialno", "get-devpath"):
            dev, error = self._acquire(serial, tid)
            if dev is None:
                _fail(sock, error)
            else:
                d = dev.dev
                _okay(sock, {"features": d.features, "get-state": d.state,
                             "get-serialno": d.serial, "get-devpath": d.devpath or "unknown"}[rest])
        elif rest.startswith(("track-devices", "wait-for-")):
            _okay(sock)
            self._watch(sock, rest, serial)
        else:
            _fail(sock, "unknown host service")
        return None

    def _watch(self, sock: socket.socket, rest: str, serial: Optional[str]) -> None:
        """track-devices[-l] (push the list on change) and wait-for-<any>-<state>."""
        sent: Optional[str] = None
        while not self._stop.is_set():
            if rest.startswith("track-devices"):
                text = self._listing(rest.endswith("-l"))
                if text != sent:
                    data = text.encode()
                    sock.sendall(b"%04x" % len(data) + data)
                    sent = text
            else:
                want = rest.rsplit("-", 1)[1]
                dev, error = self._acquire(serial)
                if (want == "disconnect" and dev is None) or \
                        (dev is not None and want in ("any", dev.dev.state)):
                    _okay(sock)
                    return
                if error == "more than one device/emulator":
                    _fail(sock, error)
                    return
            with self._lock:
                self._lock.wait(timeout=0.1)

    # shell
    def _shell(self, sock: socket.socket, dev: _Device, service: str) -> None:
        head, _, cmd = service.partition(":")
        args = head.split(",")[1:]
        v2 = "v2" in args
        term = next((a[5:] for a in args if a.startswith("TERM=")), None)
        try:
            proc, number = dev.spawn(cmd, term, merge_stderr=not v2)
        except (ConnectionError, OSError) as e:
            _fail(sock, "closed")
            log.debug("spawn failed: %s", e)
            return
        if dev.dev.unplug_at_command == number:
            self._unplug_later(dev.dev.serial, dev.dev.unplug_after_s or 0.0)
        _okay(sock)
        out, done = _Out(sock, v2), threading.Event()
        streams = [(proc.stdout, 1)] + ([(proc.stderr, 2)] if v2 else [])
        pumps = [threading.Thread(target=self._pump, args=(f.fileno(), out, sid), daemon=True)
                 for f, sid in streams if f is not None]
        feeder = threading.Thread(target=self._feed, args=(sock, proc, v2, done), daemon=True)
        for t in [*pumps, feeder]:
            t.start()
        for t in pumps:
            t.join()
        code = dev.finish(proc)
        done.set()
        if v2 and not dev.gone:
            out.send(3, bytes([code]))
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            log.debug("shutdown after shell: %s", e)
        feeder.join(timeout=5)

    @staticmethod
    def _pump(fd: int, out: _Out, stream: int) -> None:
        """Forward a command's stdout or stderr as it comes."""
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                return
            if not data or not out.send(stream, data):
                return

    @staticmethod
    def _feed(sock: socket.socket, proc: subprocess.Popen[bytes], v2: bool,
              done: threading.Event) -> None:
        """Client -> command stdin; if the client goes away first, kill the command."""
        stdin = proc.stdin
        assert stdin is not None
        try:
            while True:
                if v2:
                    head = _recv_exact(sock, 5)
                    if head is None:
                        break
                    stream, n = struct.unpack("<BI", head)
                    data = _recv_exact(sock, n) if n else b""
                    if data is None:
                        break
                else:
                    stream, data = 0, sock.recv(65536)
                    if not data:
                        break
                if stream == 0 and not stdin.closed:
                    try:
                        stdin.write(data)   # unbuffered: a blocking pipe write takes it all
                    except OSError:
                        stdin.close()       # the command closed its stdin; drop the rest
                elif stream == 4:
                    stdin.close()
        except OSError as e:
            log.debug("shell input ended: %s", e)
        if not done.is_set():
            _kill_session(proc.pid)
        stdin.close()

    # sync
    def _sync(self, sock: socket.socket, dev: _Device) -> None:
        """The sync: service (SYNC.TXT, v1 requests) on the device's sandbox directory."""
        _okay(sock)
        while True:
            head = _recv_exact(sock, 8)
            if head is None:
                return
            cmd, n = head[:4], struct.unpack("<I", head[4:])[0]
            if n > 1024:
                _sync_fail(sock, "path too long")
                return
            raw = _recv_exact(sock, n)
            if raw is None:
                return
            name = raw.decode(errors="surrogateescape")
            if cmd == b"STAT":
                sock.sendall(b"STAT" + self._stat(dev.host_path(name)))
            elif cmd == b"LIST":
                self._list(sock, dev.host_path(name))
            elif cmd == b"RECV":
                if not self._send_file(sock, dev.host_path(name)):
                    return
            elif cmd == b"SEND":
                if not self._receive_file(sock, dev, name):
                    return
            else:
                if cmd != b"QUIT":
                    _sync_fail(sock, f"unknown command {struct.unpack('<I', cmd)[0]:08x}")
                return

    @staticmethod
    def _stat(path: Path) -> bytes:
        try:
            st = os.lstat(path)
        except OSError:
            return struct.pack("<III", 0, 0, 0)
        return struct.pack("<III", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime))

    def _list(self, sock: socket.socket, path: Path) -> None:
        try:
            names = [".", "..", *sorted(os.listdir(path))]
        except OSError:
            names = []
        for entry in names:
            info = self._stat(path / entry)
            if info != bytes(12):
                data = entry.encode(errors="surrogateescape")
                sock.sendall(b"DENT" + info + struct.pack("<I", len(data)) + data)
        sock.sendall(b"DONE" + bytes(16))

    @staticmethod
    def _send_file(sock: socket.socket, path: Path) -> bool:
        try:
            f = open(path, "rb")
        except OSError as e:
            _sync_fail(sock, f"open failed: {os.strerror(e.errno or 0)}")
            return False
        with f:
            while chunk := f.read(_SYNC_MAX):
                sock.sendall(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
        sock.sendall(b"DONE" + bytes(4))
        return True

    @staticmethod
    def _receive_file(sock: socket.socket, dev: _Device, spec: str) -> bool:
        """SEND path,mode: DATA chunks then DONE(mtime); answers OKAY or FAIL like adbd."""
        path_s, comma, mode_s = spec.rpartition(",")
        if not comma or not mode_s.isdigit():
            _sync_fail(sock, "missing , in ID_SEND" if not comma else "bad mode")
            return False
        mode, path = int(mode_s), dev.host_path(path_s)
        link = stat.S_ISLNK(mode)
        mode &= 0o777
        mode |= (mode >> 3) & 0o070  # adbd copies the user bits to group and other
        mode |= (mode >> 3) & 0o007
        chunks: list[bytes] = []
        error = ""
        try:
            if path.is_symlink() or path.is_file():
                path.unlink()
            _mkdirs(path.parent, 0o775)
            fd = None if link else os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        except OSError as e:
            error, fd = f"couldn't create file: {os.strerror(e.errno or 0)}", None
        while True:
            head = _recv_exact(sock, 8)
            if head is None:
                return False
            kind, n = head[:4], struct.unpack("<I", head[4:])[0]
            if kind == b"DONE":
                mtime = n
                break
            if kind != b"DATA" or n > _SYNC_MAX:
                _sync_fail(sock, "invalid data message")
                return False
            data = _recv_exact(sock, n)
            if data is None:
                return False
            if fd is not None:
                os.write(fd, data)
            elif link:
                chunks.append(data)
        if fd is not None:
            os.fchown(fd, dev.dev.uid, dev.dev.uid)
            os.fchmod(fd, mode)
            os.close(fd)
        if error:
            _sync_fail(sock, error)
            return False
        if link:
            path.symlink_to(b"".join(chunks).rstrip(b"\0").decode())
        os.utime(path, (mtime, mtime), follow_symlinks=False)
        sock.sendall(b"OKAY" + bytes(4))
        return True


# ----------------------------------------------------------------------------- manual use
def main(argv: Optional[list[str]] = None) -> int:
    """Serve the devices of a JSON config (``{"devices": [{"serial": ...}, ...]}``) until ^C."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0, help="loopback port (0: a free one)")
    ap.add_argument("--config", type=Path, help="JSON with a 'devices' list of FakeDevice fields")
    ap.add_argument("--keep", action="store_true", help="keep the sandboxes on exit")
    args = ap.parse_args(argv)
    default = {"devices": [{"serial": "emu-5554"}]}
    cfg = json.loads(args.config.read_text()) if args.config else default
    devices = [FakeDevice.from_dict(d) for d in cfg["devices"]]
    logging.basicConfig(level=logging.INFO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with AdbStandin(devices, port=args.port, keep=args.keep) as srv:
        print(f"export ANDROID_ADB_SERVER_PORT={srv.port}", flush=True)
        for d in devices:
            print(f"# {d.serial} [{d.state}] root={d.root}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
