"""The demo end to end on the fast digits model (the README's demo runs it on Fashion-MNIST)."""

import json


def test_demo_digits_end_to_end(tmp_path):
    from eecompile import load_bundle
    from eecompile.report.demo import run_demo

    r = run_demo("dsnet-digits", tmp_path / "demo", quiet=True)
    assert (tmp_path / "demo" / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    on_disk = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert on_disk["thresholds"] == r["thresholds"] and on_disk["budget"].startswith("latency-ms=")
    assert len(r["exits"]) == 3 and abs(sum(e["share_exiting"] for e in r["exits"]) - 1) < 1e-9
    for e in r["exits"]:
        assert abs(e["accuracy_float"] - e["accuracy_int8"]) <= 0.02
    # a real run: early exit is cheaper than the full network, in MACs and in the C runner's
    # measured time; the C runner and the Python runtime take the same decisions
    assert r["mac_ratio"] < 1.0 and r["latency_ratio"] < 0.95 and r["early_exit"]["c_equals_python"]
    pr = r["profile"]
    assert all(b > a for a, b in zip(pr["p50_us"], pr["p50_us"][1:]))
    assert json.loads(open(pr["file"]).read())["complete"]
    # the calibrated rule is in the bundle, and validation was redone at it
    m = load_bundle(r["bundle"]).manifest
    assert [e.threshold for e in m.exits] == r["thresholds"] and m.validation["thresholds"] == r["thresholds"]
    assert m.decision["calibration"]["budget"] == r["budget"]
    # the Android step: the app created from the template, its JNI bridge equal to the Python
    # runtime in a JVM here, the APK built and verified (not run on a phone)
    an = r["android"]
    assert "skipped" not in an, an.get("skipped")
    assert an["host_check"]["ok"] and an["host_check"]["logits_equal"] == an["host_check"]["n"] == an["samples"]
    assert an["apk"]["native_code"] == ["arm64-v8a"] and (tmp_path / "demo" / "eecompile-demo.apk").stat().st_size > 0
