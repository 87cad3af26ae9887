"""``calibrate()``: choose the exits to keep and the decision rule of a bundle under a budget,
on its own exported stages, with every figure reported on held-out data the search never saw.

The data is split (seeded) into a search part, a held-out part and, with a guarantee, a
calibration part for Learn-then-Test. The policy (``auto``) is chosen by fitting on one half
of the search part and comparing on the other half; the held-out part only reports.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from eecompile.bundle.io import Bundle
from eecompile.core.names import POLICY_INFO
from eecompile.errors import CalibrationError, InfeasibleBudgetError

from . import guarantee as gt
from .budget import Budget
from .cache import ExitLogits, check_labelled, exit_logits
from .certify import build_family, choose_certified, guarantee_cost_model, guaranteed_cost
from .costs import CostModel, find_profile, mac_costs, profile_costs
from .scores import ALL_POLICIES, Features, fit_gates, public_threshold
from .search import DROP_GRID, SCORE_RANGE, Eval, Problem, Rule, solve

# --delta without a guarantee is refused; the CLI passes this default either way, so it is let through
DEFAULT_DELTA = 0.1


@dataclass
class CalibrateOptions:
    budget: Budget
    policy: str = "auto"  # auto | max-prob | entropy | margin | patience | learned
    exits: str = "auto"  # auto (search which to keep) | all | "0,2,3"
    cost: str = "auto"  # auto (the bundle's device profile, else MACs) | macs
    profile: str | Path | None = None
    guarantee_eps: float | None = None
    delta: float | None = None  # None: DEFAULT_DELTA; only with a guarantee (guarantee_eps or cost_guarantee)
    cost_guarantee: bool = False
    holdout: float = 0.3
    seed: int = 0
    margin_z: float = 2.0  # an accuracy-drop budget is met with this many standard errors to spare (search.Problem)
    backend: str | None = None
    write: bool = True


@dataclass
class Splits:
    search: np.ndarray
    holdout: np.ndarray
    cal: np.ndarray | None = None


def split(n: int, holdout: float, with_cal: bool, seed: int) -> Splits:
    perm = np.random.default_rng(seed).permutation(n)
    n_hold = int(round(holdout * n))
    rest = perm[n_hold:]
    if not with_cal:
        return Splits(np.sort(rest), np.sort(perm[:n_hold]))
    half = len(rest) // 2
    return Splits(np.sort(rest[:half]), np.sort(perm[:n_hold]), np.sort(rest[half:]))


def parse_exits(spec: str, n_exits: int) -> tuple[np.ndarray, list[bool]]:
    """(initial kept mask, may each early exit be dropped) for --exits auto | all | 0,2,3."""
    every = np.ones(n_exits, dtype=bool)
    if spec == "auto":
        return every, [True] * (n_exits - 1)
    if spec == "all":
        return every, [False] * (n_exits - 1)
    try:
        idx = sorted({int(v) for v in spec.split(",")})
    except ValueError:
        raise CalibrationError(f"--exits {spec!r} is not auto, all or a list of exit indices",
                               hint=f"e.g. --exits 0,2,{n_exits - 1}") from None
    bad = [i for i in idx if not 0 <= i < n_exits]
    if bad:
        raise CalibrationError(f"--exits names exit {bad[0]}, the bundle has exits 0..{n_exits - 1}",
                               hint=f"choose among 0..{n_exits - 1} (the last is always kept)")
    kept = np.zeros(n_exits, dtype=bool)
    kept[idx] = True
    kept[-1] = True
    return kept, [False] * (n_exits - 1)


def cost_models(bundle: Bundle, opts: CalibrateOptions) -> tuple[dict[str, CostModel], str, dict | None]:
    """The cost models (by kind) and the primary kind the objective uses."""
    b = opts.budget
    models = {"macs": mac_costs(bundle)}
    prof = None if opts.cost == "macs" else find_profile(bundle, opts.profile)
    if prof is not None:
        models["latency"] = profile_costs(prof, "latency")
        if all(e.get("energy") for e in prof["exits"]):
            models["energy"] = profile_costs(prof, "energy")
    if (b.needs_latency or b.energy_mj is not None) and prof is None:
        raise CalibrationError(f"the budget {b.describe()} is a device cost, and there is no device profile"
                               + (" (--cost macs)" if opts.cost == "macs" else ""),
                               hint="profile the bundle first (eecompile profile BUNDLE --device ...), or "
                                    "budget accuracy-drop=X alone (MAC costs)")
    if b.energy_mj is not None and "energy" not in models:
        raise CalibrationError("an energy budget needs energy figures, and the profile has none",
                               hint="profile where energy can be measured, or with --power-w W (an estimate)")
    primary = "energy" if b.energy_mj is not None else "latency" if "latency" in models else "macs"
    return models, primary, prof


def _problem(data: ExitLogits, feat: Features, idx: np.ndarray, costs: dict, budget: Budget, primary: str,
             z: float = 2.0) -> Problem:
    return Problem(feat.take(idx), data.correct[idx], costs, budget, primary, z)


def _search_policy(pb: Problem, policy: str, kept0: np.ndarray, drop_ok: list[bool], feat_fit: Features,
                   correct_fit: np.ndarray) -> tuple[Rule, Eval]:
    gates = fit_gates(feat_fit, correct_fit, kept0) if policy == "learned" else None
    return solve(pb, policy, kept0, drop_ok, gates)


def choose_policy(data: ExitLogits, feat: Features, search_idx: np.ndarray, opts: CalibrateOptions, costs: dict,
                  primary: str, kept0: np.ndarray, drop_ok: list[bool]) -> tuple[str, dict]:
    """``auto``: each candidate policy searched on one half of the search part (its gates fitted
    there too) and judged on the other half; the held-out part is not used."""
    if opts.policy != "auto":
        return opts.policy, {}
    half = len(search_idx) // 2
    a, b = search_idx[:half], search_idx[half:]
    pa = _problem(data, feat, a, costs, opts.budget, primary, opts.margin_z)
    pb = _problem(data, feat, b, costs, opts.budget, primary, 0.0)  # judged on its own: no selection to guard
    judged = {}
    for policy in ALL_POLICIES:
        rule, _ = _search_policy(pa, policy, kept0, drop_ok, feat.take(a), data.correct[a])
        ev = pb.evaluate(rule)
        judged[policy] = {"rank": pb.rank(ev), "accuracy": ev.accuracy, "cost": ev.cost[primary],
                          "violation": ev.violation}
    best = min(judged, key=lambda p: judged[p]["rank"])
    return best, {p: {k: v for k, v in d.items() if k != "rank"} for p, d in judged.items()}


def _describe_eval(pb: Problem, ev: Eval, costs: dict, kept: np.ndarray) -> dict:
    out = {"accuracy": ev.accuracy, "final_accuracy": pb.final_acc, "drop_pts": ev.drop_pts,
           "cost": ev.cost, "p95_latency_us": ev.p95_latency_us, "exit_shares": ev.shares}
    earliest = np.where(pb.correct.any(axis=1), pb.correct.argmax(axis=1), pb.k - 1)
    full = {kind: float(cm.exit_cost[-1]) for kind, cm in costs.items()}
    oracle = {kind: float(cm.oracle(earliest).mean()) for kind, cm in costs.items()}
    out["full_path_cost"] = full
    out["oracle_cost"] = oracle
    out["oracle_accuracy"] = float(pb.correct.any(axis=1).mean())
    out["ratio_to_full"] = {k: ev.cost[k] / full[k] for k in costs}
    out["ratio_to_oracle"] = {k: ev.cost[k] / oracle[k] for k in costs}
    return out


def _infeasible(pb: Problem, budget: Budget, policy: str, kept0, drop_ok, gates) -> InfeasibleBudgetError:
    """Name the nearest feasible point: what the constraints cost alone."""
    notes = []
    loose = Problem(pb.feat, pb.correct, pb.costs, Budget(), pb.primary)
    cheapest = Rule(policy, np.full(pb.k, SCORE_RANGE[policy][0]), kept0.copy(), gates)
    cheap_ev = loose.evaluate(cheapest)
    unit = "ms"
    if budget.latency_ms is not None:
        notes.append(f"the cheapest rule (every sample at the first exit) costs {cheap_ev.cost['latency'] / 1000:.4g} "
                     f"{unit} on average (accuracy {100 * cheap_ev.accuracy:.2f}%)")
    if budget.p95_latency_ms is not None:
        notes.append(f"the cheapest rule's p95 latency is {cheap_ev.p95_latency_us / 1000:.4g} ms")
    if budget.energy_mj is not None:
        notes.append(f"the cheapest rule costs {cheap_ev.cost['energy']:.4g} mJ per inference")
    if budget.accuracy_drop_pts is not None:
        only_acc = Problem(pb.feat, pb.correct, pb.costs, Budget(accuracy_drop_pts=budget.accuracy_drop_pts),
                           pb.primary, pb.z)
        _, ev = solve(only_acc, policy, kept0, drop_ok, gates)
        parts = [f"latency-ms={ev.cost['latency'] / 1000:.4g}" if k == "latency" else f"energy-mj={v:.4g}"
                 for k, v in ev.cost.items() if k in ("latency", "energy")]
        notes.append(f"within accuracy-drop={budget.accuracy_drop_pts:g} the cheapest rule needs "
                     + (", ".join(parts) or f"{ev.cost['macs']:.4g} MMAC"))
    return InfeasibleBudgetError(f"no {policy} rule meets the budget {budget.describe()} on the search data: "
                                 + "; ".join(notes), hint="relax the budget to the nearest feasible point above")


def check_guarantee_options(opts: CalibrateOptions) -> CalibrateOptions:
    """The guarantee settings checked before any data is run; returns the options with delta set.
    delta must be in (0, 1) with either guarantee, and is refused without one (it would do
    nothing); the cost guarantee needs a mean cost budget."""
    with_cal = opts.guarantee_eps is not None or opts.cost_guarantee
    if not with_cal:
        if opts.delta is not None:
            raise CalibrationError(f"--delta {opts.delta} is given without a guarantee (--guarantee or "
                                   "--cost-guarantee): it would change nothing",
                                   hint="add --guarantee EPS (accuracy) and/or --cost-guarantee, or drop --delta")
        return opts
    delta = DEFAULT_DELTA if opts.delta is None else opts.delta
    gt.check_delta(delta)
    if opts.guarantee_eps is not None:
        gt.check_eps(opts.guarantee_eps)
    if opts.cost_guarantee:
        guaranteed_cost(opts.budget)
    return replace(opts, delta=float(delta))


def _guaranteed(data, feat, sp: Splits, opts: CalibrateOptions, costs: dict, primary: str, policy: str,
                kept0, drop_ok, gates, pb_search: Problem, prof: dict | None) -> tuple[Rule, dict]:
    """Learn-then-Test over a family of rules found on the search part (conservative first)."""
    fam = build_family(pb_search, costs, primary, policy, kept0, drop_ok, gates)
    pc = _problem(data, feat, sp.cal, costs, opts.budget, primary)
    cost_model = guarantee_cost_model(prof, opts.budget) if opts.cost_guarantee else None
    return choose_certified(fam, pc, pb_search, opts, cost_model)


def calibrate(bundle: Bundle, x: np.ndarray, y: np.ndarray | None, opts: CalibrateOptions, data_name: str = "",
              progress=None) -> dict:
    """Choose the rule; returns the report (and writes it into the bundle unless ``write`` is off)."""
    say = progress or (lambda msg: None)
    m = bundle.manifest
    if opts.policy != "auto" and opts.policy not in POLICY_INFO:
        raise CalibrationError(f"unknown policy {opts.policy!r}", hint=f"use auto or one of {', '.join(POLICY_INFO)}")
    if not 0 <= opts.margin_z <= 10:
        raise CalibrationError(f"--margin {opts.margin_z} is not in 0..10 standard errors", hint="e.g. --margin 2")
    if not 0.05 <= opts.holdout <= 0.9:
        raise CalibrationError(f"--holdout {opts.holdout} is not a share in 0.05..0.9", hint="e.g. --holdout 0.3")
    opts = check_guarantee_options(opts)
    x, y = check_labelled(bundle, x, y, "calibration data")
    kept0, drop_ok = parse_exits(opts.exits, m.n_exits)
    if not any(s.trunk for s in m.stages) and not any(g.kind == "segment" for s in m.stages for g in s.graphs):
        drop_ok = [False] * len(drop_ok)  # no trunk graphs: dropping would save nothing but the decision
    costs, primary, prof = cost_models(bundle, opts)
    with_cal = opts.guarantee_eps is not None or opts.cost_guarantee
    sp = split(len(y), opts.holdout, with_cal, opts.seed)
    if opts.guarantee_eps is not None:  # the sample count at the delta the accuracy test runs at
        gt.check_settings(opts.guarantee_eps, opts.delta, len(sp.cal), 2 if opts.cost_guarantee else 1)
    if len(sp.search) < 50 or len(sp.holdout) < 50:
        raise CalibrationError(f"{len(y)} samples are too few: the search and held-out parts need at least 50 each",
                               hint="give at least a few hundred labelled samples (--data)")
    say("running every exit over the data")
    data = exit_logits(bundle, x, y, opts.backend)
    feat = Features.of(data.logits)
    say("choosing the policy")
    policy, judged = choose_policy(data, feat, sp.search, opts, costs, primary, kept0, drop_ok)
    pb = _problem(data, feat, sp.search, costs, opts.budget, primary, opts.margin_z)
    gates = fit_gates(feat.take(sp.search), data.correct[sp.search], kept0) if policy == "learned" else None
    say(f"searching {policy} thresholds and exits")
    rule, ev = solve(pb, policy, kept0, drop_ok, gates)
    guarantee_info = None
    if with_cal:
        say("certifying (Learn-then-Test)")
        rule, guarantee_info = _guaranteed(data, feat, sp, opts, costs, primary, policy, kept0, drop_ok, gates, pb,
                                           prof)
        ev = pb.evaluate(rule)
    elif ev.violation > 0:
        raise _infeasible(pb, opts.budget, policy, kept0, drop_ok, gates)
    ph = _problem(data, feat, sp.holdout, costs, opts.budget, primary, 0.0)
    held = _describe_eval(ph, ph.evaluate(rule), costs, rule.kept)
    report = {
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "bundle": {"name": m.name, "hash": m.models_sha256},
        "data": {"name": data_name, "n": len(y), "search": len(sp.search), "holdout": len(sp.holdout),
                 "calibration": 0 if sp.cal is None else len(sp.cal), "seed": opts.seed,
                 "logits_from_cache": data.from_cache},
        "budget": opts.budget.to_dict(), "costs": {k: cm.to_dict() for k, cm in costs.items()},
        "primary_cost": primary, "profile": prof["device"]["id"] if prof else None,
        "policy": policy, "policies_judged": judged,
        "rule": _rule_dict(rule), "search": {"accuracy": ev.accuracy, "drop_pts": ev.drop_pts, "cost": ev.cost},
        "holdout": held, "guarantee": guarantee_info,
        "frontier": _frontier(data, feat, sp, costs, primary, policy, kept0, drop_ok, gates, opts.margin_z),
        "notes": _notes(bundle, prof, costs, held),
    }
    if prof is not None:
        report["anytime"] = anytime_table(prof, costs, rule.kept)
    if opts.write:
        from .writeback import write_back

        report["written"] = write_back(bundle, rule, report)
    return report


def _rule_dict(rule: Rule) -> dict:
    th = [public_threshold(rule.policy, float(t)) for t in rule.thresholds]
    th[-1] = POLICY_INFO[rule.policy].lo
    return {"policy": rule.policy, "thresholds": th, "kept": [bool(v) for v in rule.kept], "gates": rule.gates}


def _frontier(data, feat, sp: Splits, costs, primary, policy, kept0, drop_ok, gates, z: float) -> list[dict]:
    """Accuracy vs cost on the held-out part, for rules found on the search part at a range of
    accuracy drops: the Pareto frontier the chosen point sits on. Each point carries its rule, so
    a runtime can move along the frontier (the Android demo's slider does)."""
    pts = []
    ps = _problem(data, feat, sp.search, costs, Budget(), primary)
    ph = _problem(data, feat, sp.holdout, costs, Budget(), primary)
    for d in DROP_GRID:
        sub = Problem(ps.feat, ps.correct, costs, Budget(accuracy_drop_pts=d), primary, z)
        rule, _ = solve(sub, policy, kept0, drop_ok, gates, n_starts=2)
        ev = ph.evaluate(rule)
        pts.append({"target_drop_pts": d, "accuracy": ev.accuracy, "cost": ev.cost, "shares": ev.shares,
                    "rule": _rule_dict(rule)})
    return pts


def _notes(bundle: Bundle, prof: dict | None, costs: dict, held: dict) -> list[str]:
    notes = []
    if prof is not None:
        st = prof["exits"][-1]["stages_us"]
        t0 = st[0]["tmean"] / sum(s["tmean"] for s in st)
        macs = [s.macs for s in bundle.manifest.stages]
        m0 = macs[0] / sum(macs)
        if t0 > 0.4:
            oracle = held["oracle_cost"]["latency"] / held["full_path_cost"]["latency"]
            notes.append(f"stage 0 takes {100 * t0:.0f}% of the full path's time but {100 * m0:.0f}% of its MACs "
                         f"(full-resolution layers are memory-bound): no rule can cost less than the oracle, "
                         f"{oracle:.2f}x the full path on the held-out data")
    else:
        notes.append("costs are MACs: no device profile was given (eecompile profile BUNDLE --device ...); MACs "
                     "misjudge memory-bound early stages")
    return notes


def anytime_table(prof: dict, costs: dict, kept: np.ndarray) -> list[dict]:
    """For energy-harvesting and deadline-driven callers (HarvNet): per exit, the p99 time (and
    energy) to complete it under the chosen kept exits; the runtimes map a deadline to the
    deepest exit that fits. The p99 time is the profile's measured quantile; the p99 energy is
    an estimate (the exit's mean energy per inference times its p99/p50 latency ratio), and its
    row says so (``p99_energy_label``)."""
    lat = costs["latency"]
    shift = lat.exit_cost - lat.per_exit(kept)
    rows = []
    for k, e in enumerate(prof["exits"]):
        row = {"exit": k, "p99_latency_us": float(e["latency_us"]["p99"] - shift[k]),
               "p50_latency_us": float(e["latency_us"]["p50"] - shift[k])}
        if "energy" in costs:
            en = costs["energy"]
            tail = e["latency_us"]["p99"] / e["latency_us"]["p50"]
            row["p99_energy_mj"] = float(en.per_exit(kept)[k] * tail)
            row["p99_energy_label"] = f"estimated (mean energy, {en.label}, x the p99/p50 latency ratio)"
        rows.append(row)
    return rows
