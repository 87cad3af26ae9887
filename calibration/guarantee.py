"""Distribution-free guarantees by Learn-then-Test (Angelopoulos et al.; as "Fast yet Safe"
applies it to early exits), with fixed-sequence testing.

A family of rules, fixed before the calibration samples are looked at, is ordered from the
most conservative to the most aggressive. For each rule the null hypothesis "its risk on new
data exceeds the bound" gets a valid p-value on the calibration samples; testing in order and
stopping at the first rule not rejected controls the family-wise error at delta, so with
probability >= 1 - delta over the calibration draw every certified rule meets the bound.

- Accuracy: the loss of a sample is 1 when the final exit is right and the rule is wrong (it
  bounds the accuracy lost against the final exit from above), a 0/1 loss: its p-value is the
  exact binomial tail P(Bin(n, eps) <= k).
- Cost (ours): the cost of a sample, scaled from the range every rule's per-sample cost lies
  in, [c_min, c_max], to [0, 1] (the narrower the range, the more power): its p-value is
  Hoeffding-Bentkus's, tested from the rule cheapest on the search part upward; the certified
  rules' mean cost on new data stays within the budget with probability >= 1 - delta. The
  per-sample cost is modelled from the device profile (each exit's mean cost, measured there,
  at the exit the sample takes), not measured per sample: the guarantee is on that model.

With both guarantees each fixed sequence runs at delta / 2 (``split_delta``), so both hold
together with probability >= 1 - delta; the sample-size check uses the same split.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binom

from eecompile.errors import CalibrationError, InternalError


def binomial_pvalue(k_losses: int, n: int, eps: float) -> float:
    """P(Bin(n, eps) <= k): small when so few losses are unlikely if the true risk were eps."""
    return float(binom.cdf(k_losses, n, eps))


def _kl(a: float, b: float) -> float:
    a = min(max(a, 1e-12), 1 - 1e-12)
    return a * math.log(a / b) + (1 - a) * math.log((1 - a) / (1 - b))


def hb_pvalue(mean: float, n: int, bound: float) -> float:
    """Hoeffding-Bentkus p-value of H0: E[loss] > bound, for losses in [0, 1] with empirical mean.

    A bound >= 1 cannot be exceeded by a loss in [0, 1]: H0 is impossible, p = 0."""
    if bound >= 1:
        return 0.0
    if mean >= bound or n <= 0:
        return 1.0
    hoeffding = math.exp(-n * _kl(mean, bound))
    bentkus = math.e * float(binom.cdf(math.ceil(n * mean), n, bound))
    return min(1.0, hoeffding, bentkus)


def cost_pvalue(costs: np.ndarray, bound: float, c_min: float, c_max: float) -> float:
    """Hoeffding-Bentkus p-value of H0: E[cost] > bound, for per-sample ``costs`` that every rule
    keeps within [c_min, c_max]: scaled to [0, 1] by that range first."""
    costs = np.asarray(costs, dtype=float)
    span = c_max - c_min
    tol = 1e-9 * max(abs(c_max), 1.0)
    if costs.size and (costs.min() < c_min - tol or costs.max() > c_max + tol):
        raise InternalError(f"a per-sample cost ({costs.min():.6g}..{costs.max():.6g}) lies outside the range "
                            f"[{c_min:.6g}, {c_max:.6g}] the cost guarantee scales by")
    if span <= tol:  # every sample costs the same: no uncertainty
        return 0.0 if bound >= c_max else 1.0
    mean = min(max((float(costs.mean()) - c_min) / span, 0.0), 1.0) if costs.size else 1.0
    return hb_pvalue(mean, int(costs.size), (bound - c_min) / span)


def _in_unit_interval(v) -> bool:
    """0 < v < 1 for a real number (NaN, None and non-numbers are not)."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return False
    return 0 < v < 1


def split_delta(delta: float, n_guarantees: int) -> float:
    """The delta each fixed sequence is tested at: delta / 2 with both guarantees (a union bound)."""
    return delta / max(1, n_guarantees)


def check_delta(delta: float) -> None:
    """delta must be a probability strictly between 0 and 1 (NaN is refused)."""
    if not _in_unit_interval(delta):
        raise CalibrationError(f"--delta {delta} must be in (0, 1): the probability that the guarantee fails",
                               hint="e.g. --delta 0.1 (the guarantee holds with probability >= 0.9)")


def min_samples(eps: float, delta: float) -> int:
    """The fewest calibration samples with which even zero losses certify risk <= eps at delta."""
    return math.ceil(math.log(delta) / math.log(1 - eps))


def check_eps(eps: float) -> None:
    if not _in_unit_interval(eps):
        raise CalibrationError(f"--guarantee {eps}: the accuracy loss bound must be in (0, 1)",
                               hint="e.g. --guarantee 0.01 (one point)")


def check_settings(eps: float, delta: float, n_cal: int, n_guarantees: int = 1) -> None:
    """Enough calibration samples for the accuracy guarantee at the delta its test runs at
    (``split_delta``: delta / 2 when the cost guarantee is on too)."""
    check_eps(eps)
    check_delta(delta)
    used = split_delta(delta, n_guarantees)
    need = min_samples(eps, used)
    if n_cal < need:
        split_note = f" (tested at {used:g}: delta is split between the two guarantees)" if used != delta else ""
        raise CalibrationError(f"{n_cal} calibration samples are too few for --guarantee {eps} --delta {delta}"
                               f"{split_note}: at least {need} are needed (that many with zero losses just "
                               "certify it)",
                               hint=f"give more labelled data (the calibration part needs >= {need}; it is "
                                    "(1 - holdout) / 2 of --data), or loosen eps or delta")


def fixed_sequence(pvalues: list[float], delta: float) -> int:
    """How many rules, from the first, are certified: rejected in order until the first p > delta."""
    n = 0
    for p in pvalues:
        if p > delta:
            break
        n += 1
    return n
