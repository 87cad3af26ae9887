"""How commands and files reach a device: this machine, OpenSSH, or the adb client.

Every transport runs POSIX shell on the device (``sh`` on Linux, toybox ``sh`` on Android),
moves files both ways, and streams the device's stderr line by line (the runner's progress).
The real clients do the work: ``ssh`` in batch mode with one master connection reused for
every command, ``adb -s SERIAL`` (adb exits 0 when a device vanishes mid-command, so every
command ends with a marker carrying its real exit status; a missing marker means the device
went away).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from eecompile.errors import DeviceError, ToolError
from eecompile.profile.devices import DeviceSpec

LineFn = Callable[[str], None]
_RC_MARK = "__eecompile_rc="


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    gone: bool = False  # the device went away before the command ended (adb): stdout is what came before


def _stream(cmd: list[str], timeout: float | None, on_line: LineFn | None, stdin: bytes | None = None) -> Result:
    """Run ``cmd``; stderr lines go to ``on_line`` as they come; stdout is collected. (One reader
    thread per pipe: ``communicate()`` would read stderr too and take lines from the callback.)"""
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err_lines: list[str] = []
    out_chunks: list[bytes] = []

    def pump_err() -> None:
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            err_lines.append(line)
            if on_line is not None:
                on_line(line)

    def pump_out() -> None:
        for chunk in iter(lambda: proc.stdout.read(65536), b""):
            out_chunks.append(chunk)

    readers = [threading.Thread(target=pump_err, daemon=True), threading.Thread(target=pump_out, daemon=True)]
    for t in readers:
        t.start()
    if stdin is not None:
        try:
            proc.stdin.write(stdin)
        except BrokenPipeError:  # the command ended without reading it all; its status says why
            pass
        proc.stdin.close()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise DeviceError(f"{shlex.join(cmd[:4])}...: no answer in {timeout:.0f} s",
                          hint="check the device, or raise --max-secs") from None
    for t in readers:
        t.join(timeout=10)
    return Result(proc.returncode, b"".join(out_chunks).decode("utf-8", "replace"), "\n".join(err_lines))


class Transport:
    """The common interface; see the subclasses."""

    kind = ""
    emulated = False

    def __init__(self, device: DeviceSpec) -> None:
        self.device = device

    @property
    def device_id(self) -> str:
        return self.device.device_id

    def shell(self, script: str, timeout: float | None = 120, on_line: LineFn | None = None) -> Result:
        raise NotImplementedError

    def push(self, local: Path, remote: str) -> None:
        raise NotImplementedError

    def pull(self, remote: str, local: Path) -> None:
        raise NotImplementedError

    def base_dir(self) -> str:
        """Where eecompile keeps its files on the device."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def check(self, res: Result, what: str) -> Result:
        if res.gone:
            raise DeviceGone(f"{self.device.spec}: the device went away while {what}",
                             hint="reconnect it (adb devices) and profile again")
        if res.rc != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
            raise DeviceError(f"{self.device.spec}: {what} failed (exit {res.rc}): {' | '.join(tail)}",
                              hint="run the same on the device by hand to see why")
        return res


class HostTransport(Transport):
    """This machine: commands run locally, files are copied."""

    kind = "host"

    def __init__(self, device: DeviceSpec, base: Path | None = None) -> None:
        super().__init__(device)
        self._tmp = None if base else tempfile.TemporaryDirectory(prefix="eecompile-device-")
        self._base = str(base) if base else self._tmp.name

    def shell(self, script: str, timeout: float | None = 120, on_line: LineFn | None = None) -> Result:
        return _stream(["sh", "-c", script], timeout, on_line)

    def push(self, local: Path, remote: str) -> None:
        Path(remote).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(local, remote)

    def pull(self, remote: str, local: Path) -> None:
        shutil.copy2(remote, local)

    def base_dir(self) -> str:
        return self._base

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


class QemuTransport(HostTransport):
    """This machine, running the aarch64 runner under qemu-aarch64 (see eecompile.harness.aarch64):
    correctness only, timings under emulation mean nothing."""

    kind = "qemu"
    emulated = True


class SshTransport(Transport):
    """OpenSSH in batch mode (keys, no passwords), one master connection for every command."""

    kind = "ssh"

    def __init__(self, device: DeviceSpec, ssh_config: str | None = None, connect_timeout_s: int = 10) -> None:
        super().__init__(device)
        if shutil.which("ssh") is None:
            raise ToolError("ssh (the OpenSSH client) is not installed", hint="apt-get install openssh-client")
        self._ctl = tempfile.TemporaryDirectory(prefix="eecompile-ssh-")
        self.opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout_s}",
                     "-o", "ControlMaster=auto", "-o", f"ControlPath={self._ctl.name}/cm-%C",
                     "-o", "ControlPersist=120", "-p", str(device.port or 22)]
        if ssh_config:
            self.opts = ["-F", ssh_config, *self.opts]
        self.target = f"{device.user}@{device.host}"
        self._base: str | None = None

    def _ssh(self, remote_cmd: str, timeout: float | None, on_line: LineFn | None, stdin: bytes | None = None
             ) -> Result:
        res = _stream(["ssh", *self.opts, self.target, remote_cmd], timeout, on_line, stdin)
        if res.rc == 255:  # ssh's own failure, not the command's
            raise DeviceError(f"{self.device.spec}: ssh cannot reach or log in: {res.stderr.strip()[-300:]}",
                              hint=_ssh_hint(res.stderr))
        return res

    def shell(self, script: str, timeout: float | None = 120, on_line: LineFn | None = None) -> Result:
        return self._ssh(f"sh -c {shlex.quote(script)}", timeout, on_line)

    def push(self, local: Path, remote: str) -> None:
        cmd = f"mkdir -p {shlex.quote(os.path.dirname(remote))} && cat > {shlex.quote(remote)}.part && " \
              f"chmod {oct(local.stat().st_mode & 0o777)[2:]} {shlex.quote(remote)}.part && " \
              f"mv {shlex.quote(remote)}.part {shlex.quote(remote)}"
        self.check(self._ssh(cmd, 600, None, stdin=local.read_bytes()), f"copying {local.name}")

    def pull(self, remote: str, local: Path) -> None:
        proc = subprocess.run(["ssh", *self.opts, self.target, f"cat {shlex.quote(remote)}"], capture_output=True,
                              timeout=600)
        if proc.returncode != 0:
            raise DeviceError(f"{self.device.spec}: cannot read {remote}: {proc.stderr.decode()[-200:]}",
                              hint="check the path on the device")
        local.write_bytes(proc.stdout)

    def base_dir(self) -> str:
        if self._base is None:
            res = self.check(self.shell('echo "${TMPDIR:-/tmp}"'), "finding a temp directory")
            self._base = res.stdout.strip() or "/tmp"
        return self._base

    def close(self) -> None:
        subprocess.run(["ssh", *self.opts, "-O", "exit", self.target], capture_output=True, timeout=10)
        self._ctl.cleanup()


def _ssh_hint(stderr: str) -> str:
    s = stderr.lower()
    if "permission denied" in s:
        return "the key was refused: add your public key to the board's ~/.ssh/authorized_keys (ssh-copy-id)"
    if "host key verification failed" in s:
        return "the board's host key is unknown or changed: connect once with ssh to accept it"
    if "connection refused" in s:
        return "nothing listens on that port: is sshd running on the board?"
    return "check the address and that the board is on (ssh -v USER@HOST shows more)"


class AdbTransport(Transport):
    """The Android Debug Bridge client (``adb -s SERIAL``), files under /data/local/tmp."""

    kind = "adb"

    def __init__(self, device: DeviceSpec) -> None:
        super().__init__(device)
        self.adb = ["adb", "-s", device.serial or ""]

    def shell(self, script: str, timeout: float | None = 120, on_line: LineFn | None = None) -> Result:
        res = _stream([*self.adb, "shell", f"{script}\necho {_RC_MARK}$?"], timeout, on_line)
        lines = res.stdout.rstrip("\n").split("\n")
        if not lines or not lines[-1].startswith(_RC_MARK):  # no exit status: the device went away
            return Result(-1, res.stdout, res.stderr, gone=True)
        rc = int(lines[-1][len(_RC_MARK):] or 1)
        return Result(rc, "\n".join(lines[:-1]) + ("\n" if len(lines) > 1 else ""), res.stderr)

    def _adb(self, *args: str, timeout: float = 600) -> None:
        proc = subprocess.run([*self.adb, *args], capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise DeviceGone(f"{self.device.spec}: adb {args[0]} failed: {(proc.stderr or proc.stdout).strip()[-300:]}",
                             hint="check the device with adb devices")

    def push(self, local: Path, remote: str) -> None:
        self._adb("push", str(local), remote)

    def pull(self, remote: str, local: Path) -> None:
        self._adb("pull", remote, str(local))

    def base_dir(self) -> str:
        return "/data/local/tmp"


class DeviceGone(DeviceError):
    """The device disappeared (unplugged, rebooted) while it was being used."""



def adb_devices() -> list[tuple[str, str]]:
    """(serial, state) of every device the adb server lists (state: device, unauthorized, offline,
    "no permissions", ...)."""
    if shutil.which("adb") is None:
        raise ToolError("adb (the Android Debug Bridge client) is not installed", hint="apt-get install adb")
    proc = subprocess.run(["adb", "devices"], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise DeviceError(f"adb devices failed: {proc.stderr.strip()[-300:]}", hint="adb kill-server; adb devices")
    rows = []
    for line in proc.stdout.splitlines()[1:]:
        if "\t" in line:
            serial, state = line.split("\t", 1)
            rows.append((serial.strip(), state.split(" (")[0].strip()))
    return rows


_STATE_HINTS = {
    "unauthorized": "unlock the phone and accept the 'Allow USB debugging?' prompt, then retry",
    "offline": "replug the cable or run adb reconnect; the device is not answering",
    "no permissions": "the USB device is not accessible: add a udev rule for it (or run adb as root)",
}


def resolve_adb(device: DeviceSpec) -> list[DeviceSpec]:
    """``adb`` -> the one device; ``adb:SERIAL`` -> that device; ``adb:all`` -> every ready device.
    A device that is unauthorized, offline or without permissions is a clear error."""
    rows = adb_devices()
    ready = [s for s, st in rows if st == "device"]
    if device.serial == "all":
        if not ready:
            raise DeviceError("adb:all: no Android device is ready" + _listing(rows), hint="connect one (adb devices)")
        return [DeviceSpec("adb", f"adb:{s}", serial=s) for s in ready]
    if device.serial is None:
        if not rows:
            raise DeviceError("no Android device is connected (adb devices lists none)",
                              hint="connect one with USB debugging on, or adb connect HOST:PORT")
        if len(rows) > 1:
            raise DeviceError(f"{len(rows)} devices are connected: {', '.join(f'{s} ({st})' for s, st in rows)}",
                              hint="pick one with --device adb:SERIAL, or profile all with --device adb:all")
        serial, state = rows[0]
    else:
        states = dict(rows)
        if device.serial not in states:
            raise DeviceError(f"no device {device.serial!r}" + _listing(rows), hint="check the serial with adb devices")
        serial, state = device.serial, states[device.serial]
    if state != "device":
        raise DeviceError(f"device {serial} is {state}", hint=_STATE_HINTS.get(state, "check it with adb devices"))
    return [DeviceSpec("adb", f"adb:{serial}", serial=serial)]


def _listing(rows: list[tuple[str, str]]) -> str:
    return (" (adb lists: " + ", ".join(f"{s} {st}" for s, st in rows) + ")") if rows else " (adb lists none)"


def open_transport(device: DeviceSpec, ssh_config: str | None = None) -> Transport:
    if device.kind == "host":
        return HostTransport(device)
    if device.kind == "qemu":
        return QemuTransport(device)
    if device.kind == "ssh":
        return SshTransport(device, ssh_config)
    if device.serial is None or device.serial == "all":
        raise DeviceError(f"{device.spec} must be resolved to one device first", hint="use resolve_adb")
    return AdbTransport(device)
