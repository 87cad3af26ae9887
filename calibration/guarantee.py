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
- Cost (ours): the cost of a sample normalised by the most expensive exit, in [0, 1]: its
  p-value is Hoeffding-Bentkus's, tested from the cheapest rule upward; the certified rules'
  mean cost on new data stays within the budget with probability >= 1 - delta.
"""

from __future__ import annotations

import math

from scipy.stats import binom

from eecompile.errors import CalibrationError


def binomial_pvalue(k_losses: int, n: int, eps: float) -> float:
    """P(Bin(n, eps) <= k): small when so few losses are unlikely if the true risk were eps."""
    return float(binom.cdf(k_losses, n, eps))


def _kl(a: float, b: float) -> float:
    a = min(max(a, 1e-12), 1 - 1e-12)
    return a * math.log(a / b) + (1 - a) * math.log((1 - a) / (1 - b))


def hb_pvalue(mean: float, n: int, bound: float) -> float:
    """Hoeffding-Bentkus p-value of H0: E[loss] > bound, for losses in [0, 1] with empirical mean."""
    if mean >= bound:
        return 1.0
    hoeffding = math.exp(-n * _kl(mean, bound))
    bentkus = math.e * float(binom.cdf(math.ceil(n * mean), n, bound))
    return min(1.0, hoeffding, bentkus)


def min_samples(eps: float, delta: float) -> int:
    """The fewest calibration samples with which even zero losses certify risk <= eps at delta."""
    return math.ceil(math.log(delta) / math.log(1 - eps))


def check_settings(eps: float, delta: float, n_cal: int) -> None:
    if not 0 < eps < 1:
        raise CalibrationError(f"--guarantee {eps}: the accuracy loss bound must be in (0, 1)",
                               hint="e.g. --guarantee 0.01 (one point)")
    if not 0 < delta < 1:
        raise CalibrationError(f"--delta {delta} must be in (0, 1)", hint="e.g. --delta 0.1")
    need = min_samples(eps, delta)
    if n_cal < need:
        raise CalibrationError(f"{n_cal} calibration samples are too few for --guarantee {eps} --delta {delta}: "
                               f"at least {need} are needed (that many with zero losses just certify it)",
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
