"""Every policy's score at every exit, computed once from the cached logits, and the learned
gate's fit.

Scores are oriented so that an exit fires when score >= threshold (the entropy's is negated).
Patience and the learned gate look at the previous *evaluated* exit, so their scores depend
on which exits are kept; the others do not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eecompile.core.policies import gate_score, norm_entropy, softmax, top2

THRESHOLD_POLICIES = ("max-prob", "entropy", "margin", "patience")
ALL_POLICIES = THRESHOLD_POLICIES + ("learned",)


@dataclass
class Features:
    """Per sample and exit: top probability, second, normalised entropy, top-1 class."""

    p1: np.ndarray  # (N, K)
    p2: np.ndarray
    entropy: np.ndarray
    pred: np.ndarray

    @classmethod
    def of(cls, logits: list[np.ndarray]) -> "Features":
        probs = [softmax(lg) for lg in logits]
        p1, p2 = zip(*(top2(p) for p in probs))
        return cls(np.stack(p1, 1), np.stack(p2, 1), np.stack([norm_entropy(p) for p in probs], 1),
                   np.stack([p.argmax(1) for p in probs], 1))

    def take(self, idx: np.ndarray) -> "Features":
        return Features(self.p1[idx], self.p2[idx], self.entropy[idx], self.pred[idx])

    def agree(self, kept: np.ndarray) -> np.ndarray:
        """(N, K): the exit's top-1 equals the previous kept exit's (false for the first)."""
        out = np.zeros_like(self.pred, dtype=bool)
        prev = None
        for k in range(self.pred.shape[1]):
            if prev is not None:
                out[:, k] = self.pred[:, k] == self.pred[:, prev]
            if kept[k]:
                prev = k
        return out

    def streak(self, kept: np.ndarray) -> np.ndarray:
        """(N, K): PABEE's count of consecutive kept exits agreeing up to k."""
        agree = self.agree(kept)
        out = np.zeros(self.pred.shape, dtype=np.float64)
        run = np.zeros(self.pred.shape[0])
        for k in range(self.pred.shape[1]):
            run = np.where(agree[:, k], run + 1, 0) if kept[k] else run
            out[:, k] = run
        return out

    def gate_inputs(self, k: int, agree: np.ndarray) -> np.ndarray:
        p1 = self.p1[:, k]
        return np.stack([p1, p1 - self.p2[:, k], self.entropy[:, k], agree[:, k].astype(np.float32)],
                        axis=1).astype(np.float32)


def scores(feat: Features, policy: str, kept: np.ndarray, gates: list | None = None) -> np.ndarray:
    """(N, K) scores, oriented so that exit k fires when score >= threshold."""
    if policy == "max-prob":
        return feat.p1
    if policy == "margin":
        return feat.p1 - feat.p2
    if policy == "entropy":
        return -feat.entropy
    if policy == "patience":
        return feat.streak(kept)
    agree = feat.agree(kept)
    out = np.ones(feat.p1.shape, dtype=np.float32)
    for k in range(feat.p1.shape[1] - 1):
        out[:, k] = gate_score(feat.gate_inputs(k, agree), gates[k])
    return out


def public_threshold(policy: str, t: float) -> float:
    """A threshold in score space -> the policy's own (the entropy's sign back)."""
    return -t if policy == "entropy" else t


def fit_gates(feat: Features, correct: np.ndarray, kept: np.ndarray, c: float = 1.0) -> list[list[float] | None]:
    """Per early exit, a logistic regression of 'this exit's top-1 is right' on the gate's
    inputs (max-prob, margin, entropy, agreement with the previous kept exit)."""
    from sklearn.linear_model import LogisticRegression

    agree = feat.agree(kept)
    gates: list[list[float] | None] = []
    for k in range(feat.p1.shape[1] - 1):
        x, y = feat.gate_inputs(k, agree), correct[:, k]
        if y.all() or not y.any():  # one class only: a constant gate
            gates.append([0.0, 0.0, 0.0, 0.0, 8.0 if y.all() else -8.0])
            continue
        lr = LogisticRegression(C=c, max_iter=1000).fit(x, y)
        gates.append([float(v) for v in lr.coef_[0]] + [float(lr.intercept_[0])])
    gates.append(None)  # the final exit always fires
    return gates
