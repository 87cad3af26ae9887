"""Profiling on this machine (the host transport) and the energy arithmetic.

The host run is real: the bundle's C runner (ee_profile) is built, deployed to a device
directory and run; the assertions are on what it measured. The energy paths that need
hardware this machine lacks (RAPL is not exposed here, there is no battery or power rail)
are checked on synthetic samples shaped like the sysfs files (tests/test_profile_devices.py
runs the battery and rail paths end to end through the adb stand-in).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from eecompile.errors import ProfileError
from eecompile.profile import energy as en
from eecompile.profile.devices import parse_device
from eecompile.profile.measure import ProfileOptions, _energy_plan, check_options
from eecompile.profile.record import DeviceRecord, detect_throttling
from eecompile.profile.runner import RunSettings
from eecompile.profile.schema import check_profile_for, load_profile

from conftest import require_tools

FAST = ["--runs", "50", "--warmup", "5", "--min-secs", "0.3", "--max-secs", "20"]


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "eecompile", *map(str, args)], capture_output=True, text=True,
                          timeout=900, cwd=cwd)


@pytest.fixture(scope="module")
def host_profile(int8_bundle, tmp_path_factory):
    require_tools("cmake", "cc")
    out = tmp_path_factory.mktemp("prof") / "host.json"
    res = cli("profile", int8_bundle.root, "--device", "host", *FAST, "--repeat", "3", "--power-w", "2.5", "-o", out)
    assert res.returncode == 0, res.stderr
    return json.loads(out.read_text()), res


def test_host_profile_measures_every_exit(host_profile, int8_bundle):
    prof, res = host_profile
    assert prof["complete"] and prof["timings_meaningful"] and prof["device"]["transport"] == "host"
    assert prof["bundle"]["hash"] == int8_bundle.manifest.models_sha256
    p50 = [e["latency_us"]["p50"] for e in prof["exits"]]
    assert len(p50) == int8_bundle.manifest.n_exits
    assert all(b > a for a, b in zip(p50, p50[1:])), p50  # reaching a deeper exit costs more
    for e in prof["exits"]:  # an exit's p50 agrees with the sum of its stages' p50 within 10%
        stages = sum(s["p50"] for s in e["stages_us"]) + e["decision_us"]["p50"]
        assert abs(stages - e["latency_us"]["p50"]) <= 0.10 * e["latency_us"]["p50"], e
        lat = e["latency_us"]
        assert lat["min"] <= lat["p10"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"] and lat["n"] >= 50
    assert prof["load"]["t_load_ms"] > 0 and prof["load"]["t_first_ms"] > 0
    assert prof["memory"]["vm_hwm_kb"]["done"] >= prof["memory"]["vm_hwm_kb"]["load"] > 0
    assert prof["repeats"]["n"] == 3 and len(prof["repeats"]["spread"]) == len(p50)
    # no energy counter here: --power-w gives an estimate, and says so on every figure
    assert all(e["energy"]["label"] == "estimated" and e["energy"]["method"] == "power-w" for e in prof["exits"])
    assert prof["exits"][-1]["energy"]["mj_per_inference"] == pytest.approx(p50[-1] * 1e-6 * 2.5 * 1e3)
    assert (int8_bundle.root / "profiles" / f"{prof['device']['id']}.json").is_file()
    assert (int8_bundle.root / "profiles" / f"{prof['device']['id']}.png").read_bytes()[:4] == b"\x89PNG"
    assert "inference to exit" not in res.stdout and "estimated" in res.stdout  # the table, not the plot legend
    info = cli("info", int8_bundle.root)
    assert f"profile {prof['device']['id']}" in info.stdout and "[ok]" in info.stdout


def test_a_second_run_reuses_deployed_files(int8_bundle, host_profile):
    prof, _ = host_profile
    assert sorted(prof["runner"]["pushed"] + prof["runner"]["reused"]) == \
        sorted(["ee_profile", "libLiteRt.so", "inputs.npy", "stages.tflite", "decision.hash"])


def test_profile_of_another_bundle_is_refused(host_profile, resnet_bundle, int8_bundle):
    prof, _ = host_profile
    check_profile_for(prof, int8_bundle)
    with pytest.raises(ProfileError, match="belongs to another bundle"):
        check_profile_for(prof, resnet_bundle)
    stale = dict(prof, complete=False, incomplete_reason="the device went away")
    with pytest.raises(ProfileError, match="incomplete: the device went away"):
        check_profile_for(stale, int8_bundle)


def test_info_marks_a_profile_of_another_export_stale(host_profile, resnet_bundle, tmp_path):
    import shutil

    prof, _ = host_profile
    copy = tmp_path / "resnet"
    shutil.copytree(resnet_bundle.root, copy)
    (copy / "profiles").mkdir(exist_ok=True)
    (copy / "profiles" / "host-x.json").write_text(json.dumps(prof))
    info = cli("info", copy)
    assert info.returncode == 0 and "[stale (another export)]" in info.stdout


def test_profile_file_checks(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ProfileError, match="not readable JSON"):
        load_profile(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"schema": "other/9"}))
    with pytest.raises(ProfileError, match="is not an eecompile.profile/1 profile"):
        load_profile(tmp_path / "y.json")


# ---- energy arithmetic on synthetic sysfs samples ---------------------------------------------

def test_rapl_counts_across_a_wraparound():
    rng = 262_143_328_850  # a real package domain's max_energy_range_uj
    vals = [rng - 3_000_000, rng - 1_000_000, 500_000, 2_500_000]
    assert en.rapl_delta_uj(vals, rng) == 5_500_000
    assert en.rapl_delta_uj([10, 20, 35], rng) == 25
    with pytest.raises(ProfileError, match="went backwards"):
        en.rapl_delta_uj([100, 50], 0)


def _blocks(make, idle_w, active_w, runs=(1000, 500), dur=2.0, n=11):
    """idle, exit blocks ..., idle: samples every dur/(n-1) s made by make(power_w, t_s)."""
    out = [en.Block("idle", -1, dur, 0, [(t * dur / (n - 1), make(idle_w, t * dur / (n - 1))) for t in range(n)])]
    for k, r in enumerate(runs):
        out.append(en.Block("exit", k, dur, r, [(t * dur / (n - 1), make(active_w[k], t * dur / (n - 1)))
                                                 for t in range(n)]))
    out.append(en.Block("idle", -1, dur, 0, [(t * dur / (n - 1), make(idle_w, t * dur / (n - 1))) for t in range(n)]))
    return out


@pytest.mark.parametrize("sign", [1, -1])
def test_battery_sign_comes_from_the_idle_baseline(sign):
    volt = 3_850_000

    def make(power_w, t):  # current_now (uA) with this vendor's sign, voltage_now (uV)
        return [str(int(sign * power_w / (volt * 1e-6) * 1e6)), str(volt)]

    blocks = _blocks(make, 0.5, [1.7, 1.7])
    cols = {"battery:current_now": 0, "battery:voltage_now": 1}
    per_exit, info = en.exit_energies(blocks, "battery", cols, [])
    assert info["discharge_sign"] == sign and info["idle_mw"] == pytest.approx(500, rel=1e-3)
    # (1.7 W - 0.5 W) x 2 s / runs
    assert per_exit[0].mj_per_inference == pytest.approx(1.2 * 2 / 1000 * 1e3, rel=1e-3)
    assert per_exit[1].mj_per_inference == pytest.approx(1.2 * 2 / 500 * 1e3, rel=1e-3)
    assert all(p.label == "measured" and p.method == "battery" for p in per_exit)


def test_battery_on_external_power_is_not_measured():
    rec = DeviceRecord.parse("battery=/sys/class/power_supply/battery\nbattery_status=Charging\n"
                             "external_power./sys/class/power_supply/usb=1\nrecord_done=1\n")
    method, files, _, why = _energy_plan(rec, ProfileOptions())
    assert method is None and files == [] and "Charging" in why and "wireless adb" in why
    with pytest.raises(ProfileError, match="sign .* cannot be told"):
        en.discharge_sign([100.0, -120.0, 50.0])


def test_power_rails_sum_every_rail():
    def make(power_w, t):
        uws = int(power_w * 1e6 * t)  # accumulated uW*s = uJ
        return [f"t={int(t * 1000)}\nCH0(T={int(t * 1000)})[S4M_VDD_CPUCL0], {uws // 2}\n"
                f"CH1(T={int(t * 1000)})[S5M_VDD_INT], {uws - uws // 2}\n"]

    per_exit, info = en.exit_energies(_blocks(make, 0.3, [1.3, 2.3]), "rails", {"rails:0": 0}, [])
    assert info["idle_mw"] == pytest.approx(300, rel=1e-3)
    assert per_exit[0].mj_per_inference == pytest.approx(1.0 * 2 / 1000 * 1e3, rel=1e-3)
    assert per_exit[1].mj_per_inference == pytest.approx(2.0 * 2 / 500 * 1e3, rel=1e-3)
    assert en.parse_rails("t=5\nCH0(T=5)[VDD_CPU], 12\n") == {"VDD_CPU": 12}


def test_rapl_blocks_with_a_wrap_inside():
    rng = 1_000_000_000

    def make(power_w, t):  # the counter starts near its top so it wraps inside the blocks
        return [str(int(rng - 1_500_000 + power_w * 1e6 * t) % rng)]

    per_exit, info = en.exit_energies(_blocks(make, 1.0, [3.0, 5.0]), "rapl", {"rapl:0": 0}, [rng])
    assert info["idle_mw"] == pytest.approx(1000, rel=1e-3)
    assert per_exit[1].mj_per_inference == pytest.approx(4.0 * 2 / 500 * 1e3, rel=1e-3)


def test_estimate_and_bad_settings():
    est = en.estimated_energies([100.0, 250.0], 2.0)
    assert [e.label for e in est] == ["estimated"] * 2 and est[1].mj_per_inference == pytest.approx(0.5)
    for opts, msg in [(ProfileOptions(settings=RunSettings(runs=0)), "--runs 0"),
                      (ProfileOptions(power_w=-1.0), "--power-w -1.0"),
                      (ProfileOptions(settings=RunSettings(cores="zz")), "not a non-zero hex mask"),
                      (ProfileOptions(repeat=0), "--repeat 0")]:
        with pytest.raises(ProfileError, match=msg):
            check_options(opts)


def test_throttling_is_told_from_the_trace():
    steady = [(t, {"cur_khz:cpu0": 2_000_000.0, "thermal:tz0:cpu": 40.0}) for t in range(8)]
    assert not detect_throttling(steady).throttled
    hot = [(t, {"cur_khz:cpu0": 2_000_000.0 if t < 4 else 1_000_000.0, "thermal:tz0:cpu": 40.0 + 3 * t})
           for t in range(8)]
    th = detect_throttling(hot)
    assert th.throttled and any("cpu0 ran at 1000 MHz" in r for r in th.reasons)
    assert any("warmed" in r for r in th.reasons)


def test_device_specs():
    assert parse_device("ssh:pi@board:2222").port == 2222
    assert parse_device("adb:emulator-5554").serial == "emulator-5554"
    assert parse_device("qemu-aarch64").kind == "qemu"
    for bad in ["phone", "ssh:board", "ssh:pi@board:99999", "adb:"]:
        with pytest.raises(Exception, match="device|port|serial"):
            parse_device(bad)
