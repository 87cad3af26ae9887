"""Learn-then-Test on a bundle's rules (``--guarantee EPS``, ``--cost-guarantee``): the family of
rules fixed on the search part, which of them the calibration part certifies, and the choice
among the certified ones. ``calibrate()`` and ``bench/bench_calibrate.py`` both go through
``choose_certified``; the statistics are in ``guarantee``.

The cost guarantee is on the cost modelled from the device profile: each exit's mean cost
(``stat="mean"``, measured on the device) at the exit each calibration sample takes. It is not
a per-sample measurement, so it holds for the device and conditions the profile measured.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from eecompile.errors import CalibrationError, InfeasibleBudgetError, InternalError

from . import guarantee as gt
from .budget import Budget
from .costs import CostModel, profile_costs
from .search import DROP_GRID, SCORE_RANGE, Problem, Rule, solve

if TYPE_CHECKING:
    from .calibrate import CalibrateOptions

# the in-between rules of the Learn-then-Test family: the fraction of the way to "never fires"
TEMPER = (0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
COST_BASIS = ("modelled from the profile: each exit's mean cost measured on the device, combined per sample "
              "by the exit the sample takes (not measured per sample)")


def guaranteed_cost(budget: Budget) -> tuple[str, float]:
    """(kind, bound) of the mean cost that ``--cost-guarantee`` certifies: the energy budget if
    there is one, else the mean latency budget (in us). A p95 budget alone cannot be certified."""
    if budget.energy_mj is not None:
        return "energy", budget.energy_mj
    if budget.latency_ms is not None:
        return "latency", 1000 * budget.latency_ms
    raise CalibrationError(f"--cost-guarantee needs a mean cost budget (latency-ms=X or energy-mj=X); "
                           f"{budget.describe()} has none"
                           + (" (a p95 latency cannot be certified)" if budget.p95_latency_ms is not None else ""),
                           hint="e.g. --budget latency-ms=0.05 --cost-guarantee")


def guarantee_cost_model(prof: dict | None, budget: Budget) -> CostModel:
    """The cost model the cost guarantee uses: the profile's mean (not its trimmed mean)."""
    kind, _ = guaranteed_cost(budget)
    if prof is None:
        raise CalibrationError("--cost-guarantee needs a device profile", hint="eecompile profile BUNDLE --device ...")
    return profile_costs(prof, kind, stat="mean")


def residual_budget(opts: "CalibrateOptions") -> Budget:
    """The budget terms the calibration part does not certify, checked on the search part: all
    of them, less the mean cost when the cost guarantee certifies it (a p95 latency, an
    accuracy drop and the other mean cost stay)."""
    if not opts.cost_guarantee:
        return opts.budget
    kind, _ = guaranteed_cost(opts.budget)
    return replace(opts.budget, energy_mj=None) if kind == "energy" else replace(opts.budget, latency_ms=None)


def build_family(pb_search: Problem, costs: dict, primary: str, policy: str, kept0, drop_ok, gates
                 ) -> list[tuple[float, Rule]]:
    """The rules Learn-then-Test chooses among, found on the search part only (so the family is
    fixed before the calibration part is looked at), ordered from the most conservative to the
    most aggressive by their accuracy loss on the search part (then by cost, most expensive
    first): the final exit alone (no loss), the cheapest rule at each accuracy drop of
    DROP_GRID, and rules between the first two (each threshold moved a fraction of the way to
    "never fires"). Without those in-between rules the sequence starts at a rule that already
    loses about 1% of the samples against the final exit, and a tight --guarantee certifies
    nothing (measured: 0 of 100 splits at eps 0.01 on the demo bundle)."""
    lo, hi = SCORE_RANGE[policy]
    final_only = Rule(policy, np.full(pb_search.k, hi), np.asarray(kept0, dtype=bool).copy(), gates)
    rules = [final_only]
    for d in DROP_GRID:
        sub = Problem(pb_search.feat, pb_search.correct, costs, Budget(accuracy_drop_pts=d), primary, z=0.0)
        rules.append(solve(sub, policy, kept0, drop_ok, gates, n_starts=2)[0])
    if policy != "patience":
        base = rules[1]
        cands = [np.array(pb_search.candidates(base, k)) for k in range(pb_search.k - 1)]
        for a in TEMPER:  # snapped to candidate thresholds: midpoints between scores, as the search's
            th = base.thresholds.copy()
            for k, c in enumerate(cands):
                th[k] = c[np.abs(c - (th[k] + a * (hi - th[k]))).argmin()]
            rules.append(replace(base, thresholds=th))
    final_right = pb_search.correct[:, -1]
    rows = {}
    for r in rules:
        ev = pb_search.evaluate(r)
        loss = float((final_right & ~pb_search.correct[np.arange(pb_search.n), ev.exit_idx]).mean())
        rows.setdefault(r.key(), (loss, -ev.cost[primary], ev.cost[primary], r))
    return [(c, r) for _, _, c, r in sorted(rows.values(), key=lambda t: (t[0], t[1]))]


def cost_range(cm: CostModel) -> tuple[float, float]:
    """[c_min, c_max] that every rule's per-sample cost lies in: the cheapest exit with every
    earlier head dropped, and the most expensive exit with every head kept."""
    c_min = float(cm.per_exit(np.zeros(cm.n_exits, dtype=bool)).min())
    return max(0.0, c_min), float(cm.exit_cost.max())


def certify(fam: list[tuple[float, Rule]], pc: Problem, pb_search: Problem, opts: "CalibrateOptions",
            cost_model: CostModel | None = None) -> tuple[np.ndarray, dict]:
    """Which rules of the family are certified on the calibration part ``pc``: accuracy loss
    <= eps (fixed sequence from the conservative end), and/or mean modelled cost <= the budget
    (fixed sequence from the rule cheapest on the search part, costs scaled from
    ``cost_range``); with both, each test at delta / 2."""
    n = pc.n
    both = opts.guarantee_eps is not None and opts.cost_guarantee
    delta = gt.split_delta(opts.delta, 2 if both else 1)
    info: dict = {"n_calibration": n, "family_size": len(fam), "delta": opts.delta, "delta_per_test": delta}
    ok = np.ones(len(fam), dtype=bool)
    if opts.guarantee_eps is not None:
        final_ok = pc.correct[:, -1]
        pvals = []
        for _, r in fam:
            losses = int((final_ok & ~pc.correct[np.arange(n), pc.exits(r)]).sum())
            pvals.append(gt.binomial_pvalue(losses, n, opts.guarantee_eps))
        n_cert = gt.fixed_sequence(pvals, delta)
        ok[n_cert:] = False
        info.update(eps=opts.guarantee_eps, accuracy_certified=n_cert, accuracy_pvalues=pvals)
    if opts.cost_guarantee:
        kind, bound = guaranteed_cost(opts.budget)
        if cost_model is None or cost_model.kind != kind:
            raise InternalError(f"the cost guarantee on {kind} was given a {getattr(cost_model, 'kind', None)} model")
        c_min, c_max = cost_range(cost_model)
        search_mean = [float(cost_model.per_exit(r.kept)[pb_search.exits(r)].mean()) for _, r in fam]
        order = sorted(range(len(fam)), key=lambda i: (search_mean[i], i))  # the cheapest on the search part first
        pvals = [gt.cost_pvalue(cost_model.per_exit(fam[i][1].kept)[pc.exits(fam[i][1])], bound, c_min, c_max)
                 for i in order]
        n_cert = gt.fixed_sequence(pvals, delta)
        cost_ok = np.zeros(len(fam), dtype=bool)
        cost_ok[order[:n_cert]] = True
        ok &= cost_ok
        info.update(cost_kind=kind, cost_unit=cost_model.unit, cost_bound=bound, cost_stat="mean",
                    cost_basis=COST_BASIS, cost_range=[c_min, c_max], cost_certified=n_cert, cost_order=order,
                    cost_search_means=[search_mean[i] for i in order], cost_pvalues=pvals)
    info["certified"] = int(ok.sum())
    return ok, info


def pick_certified(fam, ok, pb: Problem) -> Rule | None:
    """The certified rule that does best on the search part ``pb`` under its budget."""
    certified = [r for (_, r), good in zip(fam, ok) if good]
    return min(certified, key=lambda r: pb.rank(pb.evaluate(r))) if certified else None


def choose_certified(fam: list[tuple[float, Rule]], pc: Problem, pb_search: Problem, opts: "CalibrateOptions",
                     cost_model: CostModel | None = None) -> tuple[Rule, dict]:
    """Certify on ``pc``, then choose among the certified rules on the search part, where every
    budget term the guarantee does not certify (``residual_budget``) must hold. Raises
    InfeasibleBudgetError when nothing is certified or no certified rule meets those terms."""
    ok, info = certify(fam, pc, pb_search, opts, cost_model)
    rest = residual_budget(opts)
    pb_rest = Problem(pb_search.feat, pb_search.correct, pb_search.costs, rest, pb_search.primary, pb_search.z)
    choice = pick_certified(fam, ok, pb_rest)
    if choice is None:
        raise InfeasibleBudgetError(f"no rule is certified at delta={opts.delta} on {pc.n} calibration samples "
                                    f"({info.get('accuracy_certified', '-')} by accuracy, "
                                    f"{info.get('cost_certified', '-')} by cost, of {len(fam)})",
                                    hint="loosen --guarantee or --delta, relax the budget, or give more data")
    ev = pb_rest.evaluate(choice)
    if ev.violation > 0:
        unit = pb_search.costs[pb_search.primary].unit
        what = (f"the rest of the budget, {rest.describe()} (the mean {info['cost_kind']} is certified)"
                if opts.cost_guarantee else opts.budget.describe())
        p95 = f", p95 latency {ev.p95_latency_us / 1000:.4g} ms" if ev.p95_latency_us is not None else ""
        raise InfeasibleBudgetError(f"no certified rule meets {what}: the best certified one costs "
                                    f"{ev.cost[pb_search.primary]:.4g} {unit} at accuracy {100 * ev.accuracy:.2f}% "
                                    f"(drop {ev.drop_pts:.2f} points{p95}) on the search data",
                                    hint="relax the budget to that point, or loosen the guarantee")
    info["checked_on_search"] = rest.describe()
    return choice, info
