"""The demo end to end on the fast digits model (the README's demo runs it on Fashion-MNIST)."""

import json

from eecompile.report.demo import choose_threshold, SweepPoint


def test_demo_digits_end_to_end(tmp_path):
    from eecompile.report.demo import run_demo

    r = run_demo("dsnet-digits", tmp_path / "demo", quiet=True)
    assert (tmp_path / "demo" / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    on_disk = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert on_disk["threshold"] == r["threshold"]
    assert len(r["exits"]) == 3 and abs(sum(e["share_exiting"] for e in r["exits"]) - 1) < 1e-9
    for e in r["exits"]:
        assert abs(e["accuracy_float"] - e["accuracy_int8"]) <= 0.02
    # a real run: early exit is cheaper than always running the full network, in MACs and in
    # measured time (the two passes are interleaved, so machine drift hits both alike)
    assert r["mac_ratio"] < 1.0
    assert r["early_exit"]["mean_latency_us"] < 0.95 * r["final_exit"]["mean_latency_us"]
    # the C runner profiled every exit on this machine: deeper exits cost more, early exit saves time
    pr = r["profile"]
    assert all(b > a for a, b in zip(pr["p50_us"], pr["p50_us"][1:])) and pr["c_latency_ratio"] < 1.0
    assert json.loads(open(pr["file"]).read())["complete"]
    # the chosen threshold is stored in the bundle, and validation was redone at it
    from eecompile import load_bundle

    m = load_bundle(r["bundle"]).manifest
    assert m.exits[0].threshold == r["threshold"] and m.validation["thresholds"][0] == r["threshold"]


def test_choose_threshold():
    pts = [SweepPoint(0.5, 0.90, 10.0, []), SweepPoint(0.8, 0.948, 14.0, []), SweepPoint(0.99, 0.95, 20.0, [])]
    # accuracy-drop rule: the fastest within the drop; nothing qualifies -> most conservative
    assert choose_threshold(pts, 0.95, 30.0, latency_budget=None, max_drop_pts=0.25).threshold == 0.8
    assert choose_threshold(pts, 0.99, 30.0, latency_budget=None, max_drop_pts=0.25).threshold == 0.99
    # latency-budget rule: the most accurate that fits; nothing fits -> the fastest
    assert choose_threshold(pts, 0.95, 30.0, latency_budget=0.6).threshold == 0.8
    assert choose_threshold(pts, 0.95, 30.0, latency_budget=0.7).threshold == 0.99
    assert choose_threshold(pts, 0.95, 30.0, latency_budget=0.1).threshold == 0.5
