"""Device specs of ``eecompile profile --device``: where to measure.

``host``                   this machine, through the runner built for it
``ssh:USER@HOST[:PORT]``   an embedded Linux board over OpenSSH
``adb``, ``adb:SERIAL``    an Android device over the adb client (``adb`` needs exactly one device)
``adb:all``                every Android device adb lists as ``device`` (a fleet)
``qemu-aarch64``           the aarch64 build under emulation: correctness only, timings mean nothing
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from eecompile.errors import DeviceError

KINDS = ("host", "ssh", "adb", "qemu")
_SSH = re.compile(r"^ssh:(?P<user>[A-Za-z0-9._-]+)@(?P<host>[A-Za-z0-9._-]+|\[[0-9a-fA-F:]+\])(?::(?P<port>\d+))?$")


@dataclass(frozen=True)
class DeviceSpec:
    kind: str
    spec: str  # as given
    serial: str | None = None  # adb
    user: str | None = None  # ssh
    host: str | None = None
    port: int | None = None

    @property
    def device_id(self) -> str:
        """A file-name-safe id, the profile's name in a bundle's profiles/ directory."""
        if self.kind == "adb":
            raw = f"adb-{self.serial}"
        elif self.kind == "ssh":
            raw = f"ssh-{self.user}@{self.host}" + (f"-{self.port}" if self.port and self.port != 22 else "")
        elif self.kind == "qemu":
            raw = "qemu-aarch64"
        else:
            import socket

            raw = f"host-{socket.gethostname()}"
        return re.sub(r"[^A-Za-z0-9@._-]", "_", raw)


def parse_device(spec: str) -> DeviceSpec:
    """One ``--device`` value (``adb`` and ``adb:all`` are resolved against adb's list later)."""
    s = spec.strip()
    if s == "host":
        return DeviceSpec("host", s)
    if s == "qemu-aarch64":
        return DeviceSpec("qemu", s)
    if s == "adb":
        return DeviceSpec("adb", s)
    if s.startswith("adb:"):
        serial = s[4:]
        if not serial:
            raise DeviceError(f"--device {spec!r} names no serial", hint="write adb, adb:SERIAL or adb:all")
        return DeviceSpec("adb", s, serial=serial)
    if s.startswith("ssh:"):
        m = _SSH.match(s)
        if m is None:
            raise DeviceError(f"--device {spec!r} is not ssh:USER@HOST[:PORT]", hint="e.g. ssh:pi@192.168.1.20:22")
        port = int(m.group("port")) if m.group("port") else 22
        if not 0 < port < 65536:
            raise DeviceError(f"--device {spec!r}: port {port} is not in 1..65535", hint="e.g. ssh:pi@board:22")
        return DeviceSpec("ssh", s, user=m.group("user"), host=m.group("host").strip("[]"), port=port)
    raise DeviceError(f"unknown device {spec!r}",
                      hint="use host, adb, adb:SERIAL, adb:all, ssh:USER@HOST[:PORT] or qemu-aarch64")
