"""Profiling through every transport, each as real as this machine allows:

- ssh: the real OpenSSH client against a real Debian ``sshd`` started on 127.0.0.1 (a free port,
  throwaway host and user keys in a temp dir).
- adb: the real Debian ``adb`` client against tests/adb_standin.py, a TEST DOUBLE of a phone:
  NO PHONE WAS USED. The stand-in speaks adb's host protocol on a loopback port and runs what
  the client sends in a sandbox on this machine (x86_64: it runs the host build of the runner,
  as an x86_64 emulator image would) with a fake, synthetic sysfs: battery current driven by
  the CPU time its commands use, Pixel-style power rails, cpufreq, thermal zones.
- qemu-aarch64: the aarch64 build under emulation, marked so (its timings mean nothing).
Plus a fleet of two stand-in phones profiled in parallel, and the ways a device can fail.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adb_standin import PIXEL6_RAILS, AdbStandin, BatteryModel, FakeDevice
from conftest import require_tools

FAST = ["--runs", "40", "--warmup", "5", "--min-secs", "0.3", "--max-secs", "20"]


def cli(*args, env=None, timeout=900):
    return subprocess.run([sys.executable, "-m", "eecompile", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def host_runner(int8_bundle):
    """The runner and LiteRT library built for this machine: what an x86_64 stand-in runs."""
    require_tools("cmake", "cc")
    from eecompile.harness import find_litert_lib
    from eecompile.profile.runner import _build_runner

    return _build_runner(int8_bundle, "host"), find_litert_lib()


# ---- ssh ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    require_tools("ssh", "ssh-keygen", "/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else "sshd")
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the sshd test runs as root in CI")
        pytest.skip("starting sshd on loopback needs root here")
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    shutil.copy(d / "user_key.pub", d / "authorized_keys")
    os.chmod(d / "authorized_keys", 0o600)
    port = _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n"
        f"PidFile {d}/sshd.pid\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n")
    host_pub = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    (d / "ssh_config").write_text(f"Host 127.0.0.1\n  IdentityFile {d}/user_key\n  IdentitiesOnly yes\n"
                                  f"  UserKnownHostsFile {d}/known_hosts\n  StrictHostKeyChecking yes\n")
    Path("/run/sshd").mkdir(exist_ok=True)
    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(d / "sshd_config")], stderr=open(d / "sshd.log", "w"))
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    yield {"port": port, "config": d / "ssh_config", "dir": d}
    proc.terminate()
    proc.wait(timeout=10)


def test_profile_over_ssh_with_a_real_sshd(sshd, int8_bundle, tmp_path):
    out = tmp_path / "ssh.json"
    dev = f"ssh:root@127.0.0.1:{sshd['port']}"
    res = cli("profile", int8_bundle.root, "--device", dev, "--ssh-config", sshd["config"], *FAST, "-o", out)
    assert res.returncode == 0, res.stderr
    prof = json.loads(out.read_text())
    assert prof["complete"] and prof["device"]["transport"] == "ssh" and prof["device"]["abi"] == "x86_64"
    assert prof["device"]["id"] == f"ssh-root@127.0.0.1-{sshd['port']}"
    assert prof["runner"]["deployed_to"].startswith("/tmp/eecompile/")
    p50 = [e["latency_us"]["p50"] for e in prof["exits"]]
    assert all(b > a for a, b in zip(p50, p50[1:]))
    # one master connection served every command: sshd logged one accepted login for the whole profile
    logins = (sshd["dir"] / "sshd.log").read_text().count("Accepted publickey")
    assert logins == 1, logins


def test_ssh_unreachable_and_refused_key(sshd, int8_bundle, tmp_path):
    res = cli("profile", int8_bundle.root, "--device", f"ssh:root@127.0.0.1:{_free_port()}", "--ssh-config",
              sshd["config"], *FAST)
    assert res.returncode == 1 and "cannot reach or log in" in res.stderr and "nothing listens" in res.stderr
    cfg = tmp_path / "ssh_config"  # a key the server does not know
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    cfg.write_text(sshd["config"].read_text().replace(str(sshd["dir"] / "user_key"), str(tmp_path / "other")))
    res = cli("profile", int8_bundle.root, "--device", f"ssh:root@127.0.0.1:{sshd['port']}", "--ssh-config", cfg,
              *FAST)
    assert res.returncode == 1 and "the key was refused" in res.stderr and "Traceback" not in res.stderr


# ---- adb, through the real client and the stand-in --------------------------------------------

def _adb_env(srv: AdbStandin) -> dict[str, str]:
    return {**srv.env, "ANDROID_SERIAL": ""}


def _adb_profile(srv, bundle, runner, device="adb", *extra):
    exe, lib = runner
    return cli("profile", bundle.root, "--device", device, "--runner", exe, "--litert", lib, *FAST, *extra,
               env=_adb_env(srv))


@pytest.fixture
def adb_ready():
    require_tools("adb", "nsenter", "unshare")
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the adb stand-in runs as root in CI")
        pytest.skip("the adb stand-in needs root")


@pytest.mark.parametrize("sign", [-1, 1])
def test_adb_profile_measures_battery_energy(adb_ready, int8_bundle, host_runner, tmp_path, sign):
    """A stand-in phone on battery: energy from current_now x voltage_now minus the idle baseline,
    whatever sign this 'vendor' gives a discharge."""
    dev = FakeDevice("emu-5554", battery=BatteryModel(sign=sign))
    with AdbStandin([dev]) as srv:
        res = _adb_profile(srv, int8_bundle, host_runner, "adb", "--energy-secs", "1.5", "-o", tmp_path / "p.json")
        assert res.returncode == 0, res.stderr
        services = [s for _, s in srv.requests]
    prof = json.loads((tmp_path / "p.json").read_text())
    assert prof["device"]["id"] == "adb-emu-5554" and prof["device"]["model"] == "Standin Standin Phone"
    assert prof["device"]["before"]["android_sdk"] == "30" and prof["energy"]["method"] == "battery"
    assert prof["energy"]["discharge_sign"] == sign
    mj = [e["energy"]["mj_per_inference"] for e in prof["exits"]]
    assert all(e["energy"]["label"] == "measured" for e in prof["exits"])
    assert 0 < mj[0] < mj[1] < mj[2], mj  # a deeper exit costs more energy per inference
    # the real client carried the deployment: pushes into /data/local/tmp/eecompile/<hash>/
    assert any(s.startswith("sync:") for s in services)
    assert prof["runner"]["deployed_to"].startswith("/data/local/tmp/eecompile/")


def test_adb_profile_with_power_rails(adb_ready, int8_bundle, host_runner, tmp_path):
    dev = FakeDevice("pixel-1", rails=PIXEL6_RAILS)
    with AdbStandin([dev]) as srv:
        res = _adb_profile(srv, int8_bundle, host_runner, "adb:pixel-1", "--energy-secs", "1.0", "--cleanup",
                           "--cores", "0x3", "-o", tmp_path / "p.json")
        left = list((dev.root / "data/local/tmp/eecompile").glob("*"))
    assert res.returncode == 0, res.stderr
    assert left == []  # --cleanup removed what was deployed
    prof = json.loads((tmp_path / "p.json").read_text())
    assert prof["energy"]["method"] == "rails" and prof["energy"]["idle_mw"] > 0
    assert prof["settings"]["cores"] == "0x3"
    mj = [e["energy"]["mj_per_inference"] for e in prof["exits"]]
    assert 0 < mj[0] < mj[-1], mj


def test_adb_charging_phone_energy_is_not_called_measured(adb_ready, int8_bundle, host_runner, tmp_path):
    dev = FakeDevice("usb-1", battery=BatteryModel(status="Charging", usb_online=True))
    with AdbStandin([dev]) as srv:
        res = _adb_profile(srv, int8_bundle, host_runner, "adb", "--power-w", "3", "-o", tmp_path / "p.json")
    assert res.returncode == 0, res.stderr
    prof = json.loads((tmp_path / "p.json").read_text())
    assert "Charging" in prof["energy"]["reason"] and "wireless adb" in prof["energy"]["reason"]
    assert all(e["energy"]["label"] == "estimated" for e in prof["exits"])


def test_adb_fleet_of_two_phones_in_parallel(adb_ready, int8_bundle, host_runner, tmp_path):
    devs = [FakeDevice("phone-a", props={"ro.product.model": "A"}), FakeDevice("phone-b", props={"ro.product.model": "B"}),
            FakeDevice("locked-c", state="unauthorized")]
    with AdbStandin(devs) as srv:
        t0 = time.monotonic()
        res = _adb_profile(srv, int8_bundle, host_runner, "adb:all", "--energy", "off", "-o", tmp_path / "fleet")
        wall = time.monotonic() - t0
    assert res.returncode == 0, res.stderr
    profs = [json.loads((tmp_path / "fleet" / f"adb-{s}.json").read_text()) for s in ("phone-a", "phone-b")]
    assert [p["device"]["model"] for p in profs] == ["Standin A", "Standin B"]
    assert all(p["complete"] for p in profs)
    assert "phone-a" in res.stdout and "phone-b" in res.stdout and "locked-c" not in res.stdout  # side by side
    assert wall < 120


@pytest.mark.parametrize("state,msg", [("unauthorized", "accept the 'Allow USB debugging?' prompt"),
                                       ("offline", "adb reconnect"), ("no permissions", "udev rule")])
def test_adb_device_not_ready(adb_ready, int8_bundle, host_runner, state, msg):
    with AdbStandin([FakeDevice("X1", state=state)]) as srv:
        res = _adb_profile(srv, int8_bundle, host_runner, "adb:X1")
    assert res.returncode == 1 and f"device X1 is {state}" in res.stderr and msg in res.stderr


def test_adb_no_device_and_several_without_serial(adb_ready, int8_bundle, host_runner):
    with AdbStandin([]) as srv:
        res = _adb_profile(srv, int8_bundle, host_runner)
    assert res.returncode == 1 and "no Android device is connected" in res.stderr
    with AdbStandin([FakeDevice("A1"), FakeDevice("B2")]) as srv:
        res = _adb_profile(srv, int8_bundle, host_runner)
    assert res.returncode == 1 and "2 devices are connected" in res.stderr and "adb:SERIAL" in res.stderr


def test_adb_runner_of_the_wrong_abi_is_refused_before_any_push(adb_ready, int8_bundle, host_runner):
    with AdbStandin([FakeDevice("arm-1", abi="arm64-v8a")]) as srv:
        res = _adb_profile(srv, int8_bundle, host_runner)
        pushed = [s for _, s in srv.requests if s.startswith("sync:")]
    assert res.returncode == 1 and "built for x86_64, the device is arm64-v8a" in res.stderr
    assert pushed == []


def test_adb_device_gone_mid_run_keeps_a_partial_profile(adb_ready, int8_bundle, host_runner, tmp_path):
    # commands: record, deploy dir + sha256sum, chmod, then the runner (the 4th): unplug 1.5 s into it
    dev = FakeDevice("flaky-1", unplug_at_command=4, unplug_after_s=1.5)
    with AdbStandin([dev]) as srv:
        res = _adb_profile(srv, int8_bundle, host_runner, "adb", "--energy-secs", "3", "-o", tmp_path / "p.json")
    assert res.returncode == 1 and "went away" in res.stderr and "marked incomplete" in res.stderr
    prof = json.loads((tmp_path / "p.json").read_text())
    assert prof["complete"] is False and "went away" in prof["incomplete_reason"]
    assert prof["exits"], "the latency measured before the unplug is kept"
    info = cli("info", int8_bundle.root)
    assert "profile adb-flaky-1" in info.stdout and "[incomplete]" in info.stdout


def test_bundle_that_fails_to_load_on_the_device(adb_ready, int8_bundle, resnet_bundle, tmp_path):
    """A runner generated for another bundle: the device refuses the model file (checksum)."""
    from eecompile.harness import find_litert_lib
    from eecompile.profile.runner import _build_runner

    other = _build_runner(resnet_bundle, "host")
    with AdbStandin([FakeDevice("emu-1")]) as srv:
        res = cli("profile", int8_bundle.root, "--device", "adb", "--runner", other, "--litert", find_litert_lib(),
                  *FAST, env=_adb_env(srv))
    assert res.returncode == 1 and "ee_profile failed" in res.stderr and "cannot create session" in res.stderr


# ---- qemu -----------------------------------------------------------------------------------

def test_qemu_profile_is_marked_emulated(int8_bundle, tmp_path):
    require_tools("aarch64-linux-gnu-gcc", "qemu-aarch64", "unshare", "cmake")
    res = cli("profile", int8_bundle.root, "--device", "qemu-aarch64", "--runs", "5", "--warmup", "1",
              "--min-secs", "0", "-o", tmp_path / "q.json")
    assert res.returncode == 0, res.stderr
    prof = json.loads((tmp_path / "q.json").read_text())
    assert prof["device"]["emulated"] and not prof["timings_meaningful"] and prof["device"]["abi"] == "aarch64"
    assert prof["complete"] and len(prof["exits"]) == int8_bundle.manifest.n_exits
    assert "EMULATED" in res.stdout
