"""Calibration on the exported stages: budgets, the search, write-back into the bundle and the
generated C, the learned gate, guarantees, the anytime table, and every bad input.

The bundle is the digits model's (tflite-int8, with trunks), profiled for real on this machine
(the C runner); the labelled data is the digits val + test splits (600 samples the model was
not trained on)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from eecompile import Runtime, load_bundle
from eecompile.calibrate.budget import Budget, parse_budget
from eecompile.calibrate.calibrate import CalibrateOptions, calibrate, check_guarantee_options, split
from eecompile.calibrate.certify import build_family, certify, choose_certified, cost_range
from eecompile.calibrate.costs import CostModel
from eecompile.calibrate.guarantee import (binomial_pvalue, check_settings, cost_pvalue, fixed_sequence, hb_pvalue,
                                           min_samples)
from eecompile.calibrate.scores import Features
from eecompile.calibrate.search import Problem
from eecompile.errors import CalibrationError, InfeasibleBudgetError, ProfileError

from conftest import require_tools


def cli(*args):
    return subprocess.run([sys.executable, "-m", "eecompile", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def cal_data(digits_data, tmp_path_factory):
    x = np.concatenate([digits_data["val"].x, digits_data["test"].x])
    y = np.concatenate([digits_data["val"].y, digits_data["test"].y])
    path = tmp_path_factory.mktemp("cal") / "digits_heldout.npz"
    np.savez(path, x=x, y=y)
    return path, x, y


@pytest.fixture(scope="module")
def profiled(int8_bundle, tmp_path_factory):
    """A copy of the digits bundle with a host profile (the C runner on this machine)."""
    require_tools("cmake", "cc")
    from eecompile.profile.devices import parse_device
    from eecompile.profile.measure import ProfileOptions, profile_device
    from eecompile.profile.runner import RunSettings
    from eecompile.profile.schema import save_profile

    root = tmp_path_factory.mktemp("calb") / "bundle"
    shutil.copytree(int8_bundle.root, root)
    b = load_bundle(root)
    save_profile(profile_device(b, parse_device("host"),
                                ProfileOptions(settings=RunSettings(runs=200, min_secs=0.5), energy="off",
                                               power_w=2.0)), b)
    return root


def fresh(profiled, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(profiled, dst)
    return load_bundle(dst)


@pytest.mark.parametrize("spec,msg", [
    ("", "empty"), ("latency-ms", "not KEY=VALUE"), ("speed=3", "unknown budget 'speed'"),
    ("latency-ms=abc", "not a number"), ("latency-ms=-1", "not a positive cost"),
    ("accuracy-drop=150", "not in 0..100"), ("latency-ms=1,latency-ms=2", "given twice"),
    ("energy-mj=nan", "not finite")])
def test_budget_syntax(spec, msg):
    with pytest.raises(CalibrationError, match=msg):
        parse_budget(spec)


def test_writes_the_rule_back_and_the_runtime_follows_it(profiled, cal_data, tmp_path):
    b = fresh(profiled, tmp_path)
    _, x, y = cal_data
    old_hash = b.manifest.decision_hash
    rep = calibrate(b, x, y, CalibrateOptions(budget=parse_budget("accuracy-drop=1")), data_name="digits val+test")
    assert rep["profile"] and rep["primary_cost"] == "latency" and rep["data"]["holdout"] == 180
    b2 = load_bundle(b.root)  # checksums and decision.hash verified on load
    m = b2.manifest
    assert m.decision_hash != old_hash and m.decision["calibration"]["budget"] == "accuracy-drop=1"
    assert [e.threshold for e in m.exits] == pytest.approx(rep["rule"]["thresholds"])
    assert [e.kept for e in m.exits] == rep["rule"]["kept"] and m.exits[0].policy == rep["policy"]
    # the Python runtime, running the written rule on the held-out part, gets the report's figures
    sp = split(len(y), 0.3, False, 0)
    res = Runtime(b2).run(x[sp.holdout])
    assert np.mean(res.class_idx == y[sp.holdout]) == pytest.approx(rep["holdout"]["accuracy"])
    assert (np.bincount(res.exit_idx, minlength=3) / len(sp.holdout)).tolist() == \
        pytest.approx(rep["holdout"]["exit_shares"])
    h = rep["holdout"]
    assert h["drop_pts"] <= 1.0 + 1e-9 or h["drop_pts"] < 3.0  # 180 samples: one is 0.56 points
    assert h["cost"]["latency"] < h["full_path_cost"]["latency"]
    assert (b.root / "calibration" / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert len(rep["frontier"]) >= 5 and rep["anytime"][0]["exit"] == 0
    # a second calibration keeps the first in the history
    calibrate(b2, x, y, CalibrateOptions(budget=parse_budget("accuracy-drop=3"), policy="max-prob"))
    m3 = load_bundle(b.root).manifest
    assert m3.decision["calibration"]["budget"] == "accuracy-drop=3"
    assert [h["budget"] for h in m3.decision["history"]] == ["accuracy-drop=1"]


def test_learned_rule_with_a_dropped_exit_runs_the_same_in_c(profiled, cal_data, tmp_path):
    """The calibrated rule (learned gates, a dropped exit) compiled into the generated C agrees
    with the Python runtime on every sample; a harness generated before a re-calibration refuses."""
    require_tools("cmake", "cc")
    from eecompile.core.quant import to_graph_input
    from eecompile.harness import build_harness, find_litert_lib, generate_harness

    b = fresh(profiled, tmp_path)
    _, x, y = cal_data
    rep = calibrate(b, x, y, CalibrateOptions(budget=parse_budget("accuracy-drop=2"), policy="learned",
                                              exits="1,2"))
    assert rep["rule"]["kept"] == [False, True, True] and rep["rule"]["gates"][1] is not None
    b = load_bundle(b.root)
    exe = build_harness(generate_harness(b, tmp_path / "c"), tmp_path / "c" / "build").ee_run
    ref = Runtime(b).run(x)
    assert set(ref.exit_idx.tolist()) <= {1, 2}
    np.save(tmp_path / "x.npy", np.ascontiguousarray(to_graph_input(x, b.manifest.input[0]).astype(np.int8)))
    lib = str(find_litert_lib())
    proc = subprocess.run([str(exe), str(b.root), str(tmp_path / "x.npy"), "--litert", lib, "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)["samples"]
    np.testing.assert_array_equal([s["exit_idx"] for s in out], ref.exit_idx)
    np.testing.assert_array_equal([s["class_idx"] for s in out], ref.class_idx)
    calibrate(b, x, y, CalibrateOptions(budget=parse_budget("accuracy-drop=4"), policy="max-prob"))
    proc = subprocess.run([str(exe), str(b.root), str(tmp_path / "x.npy"), "--litert", lib], capture_output=True,
                          text=True)
    assert proc.returncode == 1 and "decision rule changed" in proc.stderr


def test_latency_budget_and_the_nearest_feasible_point(profiled, cal_data, tmp_path):
    b = fresh(profiled, tmp_path)
    _, x, y = cal_data
    exit0_ms = b.manifest and json.loads((b.root / "profiles").glob("*.json").__next__().read_text())[
        "exits"][0]["latency_us"]["tmean"] / 1000
    budget = 1.5 * exit0_ms
    rep = calibrate(b, x, y, CalibrateOptions(budget=parse_budget(f"latency-ms={budget:.6f}"), write=False))
    assert rep["search"]["cost"]["latency"] <= 1000 * budget + 1e-6
    with pytest.raises(InfeasibleBudgetError, match="the cheapest rule .* costs") as err:
        calibrate(b, x, y, CalibrateOptions(budget=parse_budget(f"latency-ms={0.5 * exit0_ms:.6f}"), write=False))
    assert "relax the budget" in err.value.hint
    # a device-cost budget without a profile, or with --cost macs, is refused
    with pytest.raises(CalibrationError, match="there is no device profile"):
        calibrate(b, x, y, CalibrateOptions(budget=parse_budget("latency-ms=1"), cost="macs", write=False))


def test_anytime_table_maps_a_deadline_to_an_exit(profiled, cal_data, tmp_path):
    b = fresh(profiled, tmp_path)
    _, x, y = cal_data
    rep = calibrate(b, x, y, CalibrateOptions(budget=parse_budget("accuracy-drop=1"), exits="all"))
    table = rep["anytime"]
    assert [r["exit"] for r in table] == [0, 1, 2]
    assert all(a["p99_latency_us"] < b_["p99_latency_us"] for a, b_ in zip(table, table[1:]))
    assert all(r["p99_energy_mj"] > 0 for r in table)  # the profile's estimate (--power-w)
    rt = Runtime(load_bundle(b.root))
    tight = rt.run(x[:50], deadline_us=table[0]["p99_latency_us"] + 1e-3)
    assert (tight.exit_idx == 0).all()
    assert rt.exit_for_deadline(table[1]["p99_latency_us"] + 1e-3) == 1
    # HarvNet's use: the energy available for one inference -> the deepest exit to allow
    assert all(a["p99_energy_mj"] < b_["p99_energy_mj"] for a, b_ in zip(table, table[1:]))
    assert rt.exit_for_energy(table[1]["p99_energy_mj"] * 1.0001) == 1
    assert rt.exit_for_energy(table[-1]["p99_energy_mj"] * 2) == len(table) - 1
    assert (rt.run(x[:50], max_exit=rt.exit_for_energy(table[0]["p99_energy_mj"] * 1.0001)).exit_idx == 0).all()
    # nothing fits: None (not exit 0, which would not fit either); run() then stops at exit 0, as the C runtime
    assert rt.exit_for_energy(table[0]["p99_energy_mj"] * 0.5) is None
    assert rt.exit_for_deadline(table[0]["p99_latency_us"] * 0.5) is None
    assert (rt.run(x[:20], deadline_us=table[0]["p99_latency_us"] * 0.5).exit_idx == 0).all()
    assert all(r["p99_energy_label"].startswith("estimated") for r in table)  # an estimate, labelled so


def test_guarantee_settings(profiled, cal_data, tmp_path):
    b = fresh(profiled, tmp_path)
    _, x, y = cal_data
    with pytest.raises(CalibrationError, match=r"too few for --guarantee 0.01 --delta 0.1: at least 230 are needed"):
        calibrate(b, x, y, CalibrateOptions(budget=parse_budget("accuracy-drop=1"), guarantee_eps=0.01, write=False))
    rep = calibrate(b, x, y, CalibrateOptions(budget=parse_budget("accuracy-drop=2"), guarantee_eps=0.05,
                                              delta=0.2, write=False))
    g = rep["guarantee"]
    assert g["n_calibration"] == 210 and g["certified"] >= 1 and g["eps"] == 0.05
    assert min_samples(0.01, 0.1) == 230 and min_samples(0.05, 0.2) == 32


def test_both_guarantees_split_delta_in_the_sample_check_and_the_cost_is_the_modelled_mean(profiled, cal_data,
                                                                                           tmp_path):
    """With both guarantees each test runs at delta / 2, and the sample-size check says so: 299
    calibration samples for (0.01, 0.1) instead of 230. The cost guarantee uses the profile's
    mean per exit and says the cost is modelled from the profile."""
    b = fresh(profiled, tmp_path)
    _, x, y = cal_data
    assert min_samples(0.01, 0.05) == 299
    check_settings(0.01, 0.1, 250, n_guarantees=1)
    with pytest.raises(CalibrationError, match="at least 299 are needed"):
        check_settings(0.01, 0.1, 250, n_guarantees=2)
    full_us = json.loads(next((b.root / "profiles").glob("*.json")).read_text())["exits"][-1]["latency_us"]["mean"]
    spec = f"accuracy-drop=3,latency-ms={1.2 * full_us / 1000:.6f}"
    with pytest.raises(CalibrationError, match=r"--delta 0.1 \(tested at 0.05.*at least 299 are needed"):
        calibrate(b, x, y, CalibrateOptions(budget=parse_budget(spec), guarantee_eps=0.01, cost_guarantee=True,
                                            write=False))
    rep = calibrate(b, x, y, CalibrateOptions(budget=parse_budget(spec), guarantee_eps=0.05, delta=0.2,
                                              cost_guarantee=True, write=False))
    g = rep["guarantee"]
    assert g["delta_per_test"] == pytest.approx(0.1) and g["cost_stat"] == "mean" and g["certified"] >= 1
    assert "modelled from the profile" in g["cost_basis"] and g["checked_on_search"] == "accuracy-drop=3"
    from eecompile.calibrate.report import summary_lines

    assert any("modelled from the profile" in line for line in summary_lines(rep))


def test_learn_then_test_controls_the_risk():
    """Monte Carlo of the fixed-sequence procedure on rules of known risk: the certified rule's
    true risk exceeds eps in at most a delta share of calibration draws (binomial losses), and
    likewise for the Hoeffding-Bentkus cost bound."""
    rng = np.random.default_rng(0)
    eps, delta, n = 0.02, 0.1, 800
    risks = np.linspace(0.0, 0.06, 25)  # conservative first: the true accuracy loss of each rule
    fails = 0
    for _ in range(2000):
        losses = rng.binomial(n, risks)
        m = fixed_sequence([binomial_pvalue(int(k), n, eps) for k in losses], delta)
        fails += m > 0 and risks[m - 1] > eps
    assert fails / 2000 <= delta
    costs = np.linspace(0.2, 0.8, 25)  # cheapest first: true mean normalised cost of each rule
    fails = 0
    for _ in range(1000):
        means = rng.binomial(n, costs) / n  # a [0, 1]-bounded cost (Bernoulli: the worst case)
        m = fixed_sequence([hb_pvalue(float(v), n, 0.5) for v in means], delta)
        fails += m > 0 and costs[m - 1] > 0.5
    assert fails / 1000 <= delta


def test_hb_pvalue_at_or_above_the_largest_loss():
    """A loss in [0, 1] cannot average above a bound >= 1: p = 0, not a crash (the cost budget
    above the most expensive exit)."""
    for mean in (0.0, 0.5, 1.0):
        for bound in (1.0, 1.5, 100.0):
            assert hb_pvalue(mean, 100, bound) == 0.0
    assert cost_pvalue(np.full(50, 30.0), 30.0, 10.0, 30.0) == 0.0
    assert cost_pvalue(np.full(50, 30.0), 45.0, 10.0, 30.0) == 0.0
    assert hb_pvalue(0.5, 100, 0.4) == 1.0 and 0.0 < hb_pvalue(0.4, 100, 0.5) < 0.1


def test_cost_pvalue_scales_by_the_cost_range():
    """Costs between c_min and c_max scaled to [0, 1] by that range: more power than dividing by
    c_max alone (the old test), and still valid (Monte Carlo: the certified rule's true mean
    exceeds the bound in at most delta of the draws)."""
    c = np.array([10.0] * 100 + [20.0] * 100)  # mean 15, a budget of 16.5, exits costing 10..30
    assert cost_pvalue(c, 16.5, 10.0, 30.0) < 0.1 < hb_pvalue(c.mean() / 30.0, c.size, 16.5 / 30.0)
    rng = np.random.default_rng(1)
    shares = np.linspace(0.1, 0.9, 17)  # cheapest first: each rule's share of samples at the 30 us exit
    true_mean = 10 + 20 * shares
    fails = 0
    for _ in range(500):
        m = fixed_sequence([cost_pvalue(np.where(rng.random(300) < q, 30.0, 10.0), 20.0, 10.0, 30.0) for q in shares],
                           0.1)
        fails += m > 0 and true_mean[m - 1] > 20.0
    assert fails / 500 <= 0.1


def _synthetic(n: int, seed: int) -> tuple[Features, np.ndarray]:
    """Three exits, max-prob scores growing along the exits, accuracy following the score."""
    rng = np.random.default_rng(seed)
    conf = np.maximum.accumulate(rng.random((n, 3)), axis=1)
    p1 = 0.1 + 0.9 * conf
    correct = rng.random((n, 3)) < p1 * np.array([0.85, 0.92, 0.97])
    return Features(p1, (1 - p1) / 9, 1 - p1, np.zeros((n, 3), dtype=int)), correct


@pytest.fixture(scope="module")
def synthetic():
    lat = CostModel("latency", "us", "synthetic", np.array([10.0, 20.0, 30.0]), np.array([2.0, 2.0, 0.0]))
    (fs, cs), (fc, cc) = _synthetic(2000, 0), _synthetic(1500, 1)

    def problems(budget: Budget):
        ps = Problem(fs, cs, {"latency": lat}, budget, "latency", 2.0)
        pc = Problem(fc, cc, {"latency": lat}, budget, "latency", 0.0)
        return ps, pc

    fam = build_family(problems(Budget())[0], {"latency": lat}, "latency", "max-prob", np.ones(3, dtype=bool),
                       [True, True], None)
    return lat, fam, problems


def test_cost_guarantee_tests_cheapest_first_on_the_scaled_cost(synthetic):
    lat, fam, problems = synthetic
    budget = Budget(latency_ms=0.018)
    ps, pc = problems(budget)
    opts = check_guarantee_options(CalibrateOptions(budget=budget, cost_guarantee=True))
    ok, info = certify(fam, pc, ps, opts, lat)
    assert info["cost_range"] == [10.0, 30.0] == list(cost_range(lat))  # exit 0 .. the full path
    means = info["cost_search_means"]
    assert means == sorted(means) and len(set(means)) > 3  # ordered by the search part's cost, cheapest first
    assert means == pytest.approx([lat.per_exit(fam[i][1].kept)[ps.exits(fam[i][1])].mean() for i in info["cost_order"]])
    for i, pv in zip(info["cost_order"], info["cost_pvalues"]):
        r = fam[i][1]
        assert pv == pytest.approx(cost_pvalue(lat.per_exit(r.kept)[pc.exits(r)], 18.0, 10.0, 30.0))
    n_cert = info["cost_certified"]
    assert 1 <= n_cert < len(fam) and ok.sum() == n_cert
    assert sorted(np.flatnonzero(ok)) == sorted(info["cost_order"][:n_cert])  # a prefix of the cheap end
    # a budget above the most expensive exit certifies every rule (no crash: p = 0)
    big = Budget(latency_ms=0.05)
    ok, info = certify(fam, problems(big)[1], problems(big)[0], check_guarantee_options(
        CalibrateOptions(budget=big, cost_guarantee=True)), lat)
    assert ok.all() and set(info["cost_pvalues"]) == {0.0}


def test_cost_guarantee_still_checks_the_other_budget_terms(synthetic):
    """The certified mean cost is taken off the budget; a p95 latency and an accuracy drop are
    still checked on the search part (they used to be skipped with --cost-guarantee)."""
    lat, fam, problems = synthetic
    for spec, match in (("latency-ms=0.018,p95-latency-ms=0.009", "p95-latency-ms=0.009"),
                        ("latency-ms=0.018,accuracy-drop=0", "accuracy-drop=0")):
        budget = parse_budget(spec)
        ps, pc = problems(budget)
        opts = check_guarantee_options(CalibrateOptions(budget=budget, cost_guarantee=True))
        with pytest.raises(InfeasibleBudgetError, match=f"no certified rule meets the rest of the budget, {match}"):
            choose_certified(fam, pc, ps, opts, lat)
    budget = parse_budget("latency-ms=0.018,p95-latency-ms=0.012")
    ps, pc = problems(budget)
    rule, info = choose_certified(fam, pc, ps, check_guarantee_options(
        CalibrateOptions(budget=budget, cost_guarantee=True)), lat)
    assert ps.evaluate(rule).p95_latency_us <= 12.0 and info["checked_on_search"] == "p95-latency-ms=0.012"


@pytest.mark.parametrize("kw,msg", [
    (dict(guarantee_eps=0.05, delta=0.0), "must be in (0, 1)"),
    (dict(guarantee_eps=0.05, delta=1.0), "must be in (0, 1)"),
    (dict(guarantee_eps=0.05, delta=float("nan")), "must be in (0, 1)"),
    (dict(cost_guarantee=True, delta=-0.5), "must be in (0, 1)"),
    (dict(cost_guarantee=True, delta=float("nan")), "must be in (0, 1)"),
    (dict(delta=0.05), "given without a guarantee"),
    (dict(delta=0.1), "given without a guarantee"),
    (dict(delta=float("nan")), "given without a guarantee"),
    (dict(guarantee_eps=float("nan")), "must be in (0, 1)"),
])
def test_delta_is_checked_whenever_a_guarantee_is_on(kw, msg):
    budget = parse_budget("latency-ms=1") if kw.get("cost_guarantee") else parse_budget("accuracy-drop=1")
    with pytest.raises(CalibrationError, match=re.escape(msg)) as err:
        check_guarantee_options(CalibrateOptions(budget=budget, **kw))
    assert err.value.hint
    assert check_guarantee_options(CalibrateOptions(budget=budget)).delta is None  # no guarantee, no delta
    assert check_guarantee_options(CalibrateOptions(budget=budget, guarantee_eps=0.05)).delta == 0.1


@pytest.mark.parametrize("args,msg", [
    (["--exits", "5"], "names exit 5, the bundle has exits 0..2"),
    (["--exits", "a,b"], "is not auto, all or a list"),
    (["--budget", "latency-ms=1", "--cost", "macs"], "there is no device profile"),
    (["--guarantee", "1.5"], "must be in (0, 1)"),
    (["--holdout", "0.99"], "is not a share in 0.05..0.9"),
    (["--guarantee", "0.05", "--delta", "0"], "--delta 0.0 must be in (0, 1)"),
    (["--guarantee", "0.05", "--delta", "nan"], "--delta nan must be in (0, 1)"),
    (["--budget", "latency-ms=1", "--cost-guarantee", "--delta", "1.5"], "--delta 1.5 must be in (0, 1)"),
    (["--delta", "0.05"], "--delta 0.05 is given without a guarantee"),
    (["--budget", "p95-latency-ms=1", "--cost-guarantee"], "needs a mean cost budget"),
])
def test_cli_bad_settings(profiled, cal_data, args, msg):
    path, _, _ = cal_data
    base = ["calibrate", profiled, "--data", path, "--dry-run"]
    if "--budget" not in args:
        base += ["--budget", "accuracy-drop=1"]
    res = cli(*base, *args)
    assert res.returncode == 1 and msg in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_cli_bad_data_and_profiles(profiled, cal_data, resnet_bundle, tmp_path):
    path, x, _ = cal_data
    np.save(tmp_path / "nolabels.npy", x)
    res = cli("calibrate", profiled, "--data", tmp_path / "nolabels.npy", "--budget", "accuracy-drop=1")
    assert res.returncode == 1 and "has no labels" in res.stderr
    np.savez(tmp_path / "shape.npz", x=np.zeros((100, 1, 9, 9), np.float32), y=np.zeros(100, np.int64))
    res = cli("calibrate", profiled, "--data", tmp_path / "shape.npz", "--budget", "accuracy-drop=1")
    assert res.returncode == 1 and "does not match the model input" in res.stderr
    other = next((profiled / "profiles").glob("*.json"))
    res = cli("calibrate", resnet_bundle.root, "--data", path, "--budget", "accuracy-drop=1", "--profile", other,
              "--dry-run")
    assert res.returncode == 1 and "belongs to another bundle" in res.stderr


def test_report_on_the_cli(profiled, cal_data, tmp_path):
    path, _, _ = cal_data
    copy = tmp_path / "b"
    shutil.copytree(profiled, copy)
    res = cli("calibrate", copy, "--data", path, "--budget", "accuracy-drop=1", "-o", tmp_path / "r.json")
    assert res.returncode == 0, res.stderr
    assert "held-out accuracy" in res.stdout and "x the oracle" in res.stdout and "regenerate the harness" in res.stdout
    assert json.loads((tmp_path / "r.json").read_text())["budget"]["spec"] == "accuracy-drop=1"
    info = cli("info", copy)
    assert info.returncode == 0
