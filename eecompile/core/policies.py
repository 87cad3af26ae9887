"""Exit policies: decide, from an exit's logits, which samples stop there.

Every policy has a per-exit threshold (the final exit always fires). ``max-prob``
fires when the top softmax probability >= t; ``entropy`` when the normalised entropy
H(p)/log(C) <= t; ``margin`` when p1 - p2 >= t; ``patience`` (PABEE) when the top-1
class has stayed the same for t consecutive exits (t an integer >= 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eecompile.core.names import DEFAULT_THRESHOLDS, GATE_FEATURES, POLICY_INFO, POLICY_NAMES
from eecompile.errors import InternalError, PolicyError


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float32) - logits.max(axis=1, keepdims=True).astype(np.float32)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class PolicyState:
    """Per-sample memory across exits (patience needs the previous prediction)."""

    prev_pred: np.ndarray
    streak: np.ndarray

    @classmethod
    def new(cls, n: int) -> "PolicyState":
        return cls(np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int64))

    def take(self, keep: np.ndarray) -> "PolicyState":
        return PolicyState(self.prev_pred[keep], self.streak[keep])


class ExitPolicy:
    name = ""

    def __init__(self, thresholds: list[float]) -> None:
        info = POLICY_INFO[self.name]
        self.lo, self.hi = info.lo, info.hi
        for t in thresholds:
            if not np.isfinite(t) or not (self.lo <= t <= self.hi):
                raise PolicyError(f"threshold {t} out of range for policy {self.name} ([{self.lo:g}, {self.hi:g}])",
                                  hint=f"pass a threshold between {self.lo:g} and {self.hi:g}")
            if info.integer and t != int(t):
                raise PolicyError(f"{self.name} thresholds must be whole numbers, got {t}",
                                  hint="pass e.g. --threshold 2")
        self.thresholds = [float(t) for t in thresholds]

    def score(self, probs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fires(self, score: np.ndarray, threshold: float) -> np.ndarray:
        return score >= threshold

    def decide(self, exit_idx: int, logits: np.ndarray, state: PolicyState) -> np.ndarray:
        """Boolean mask of samples that exit at ``exit_idx``; updates ``state`` in place."""
        probs = softmax(logits)
        pred = probs.argmax(axis=1)
        state.streak = np.where(pred == state.prev_pred, state.streak + 1, 0)
        state.prev_pred = pred
        return self.fires(self.score_with_state(probs, state, exit_idx), self.thresholds[exit_idx])

    def score_with_state(self, probs: np.ndarray, state: PolicyState, exit_idx: int) -> np.ndarray:
        return self.score(probs)


class MaxProb(ExitPolicy):
    name = "max-prob"

    def score(self, probs):
        return probs.max(axis=1)


def norm_entropy(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1) / np.log(probs.shape[1])


def top2(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.sort(probs, axis=1)[:, -2:]
    return t[:, 1], t[:, 0]


def gate_features(probs: np.ndarray, agree: np.ndarray) -> np.ndarray:
    """The learned gate's inputs (GATE_FEATURES): top probability, margin p1 - p2, normalised
    entropy, and whether the top-1 class equals the previous evaluated exit's."""
    p1, p2 = top2(probs)
    return np.stack([p1, p1 - p2, norm_entropy(probs), agree.astype(np.float32)], axis=1).astype(np.float32)


def gate_score(features: np.ndarray, gate: list[float]) -> np.ndarray:
    """sigmoid(w . features + b): the gate's estimate that this exit's prediction is right."""
    w = np.asarray(gate[:-1], dtype=np.float32)
    z = features @ w + np.float32(gate[-1])
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


class Entropy(ExitPolicy):
    name = "entropy"

    def score(self, probs):
        return norm_entropy(probs)

    def fires(self, score, threshold):
        return score <= threshold


class Margin(ExitPolicy):
    name = "margin"

    def score(self, probs):
        p1, p2 = top2(probs)
        return p1 - p2


class Patience(ExitPolicy):
    name = "patience"

    def score_with_state(self, probs, state, exit_idx):
        return state.streak.astype(np.float64)


class Learned(ExitPolicy):
    """A per-exit logistic gate on (max-prob, margin, entropy, agreement with the previous exit),
    in the spirit of EENet / JEI-DNN: fires when the gate's output >= the exit's threshold."""

    name = "learned"

    def __init__(self, thresholds: list[float], gates: list[list[float] | None] | None = None) -> None:
        super().__init__(thresholds)
        n = len(GATE_FEATURES) + 1
        if gates is None or len(gates) != len(thresholds) or any(
                g is not None and (len(g) != n or not np.all(np.isfinite(g))) for g in gates[:-1]) or any(
                g is None for g in gates[:-1]):
            raise PolicyError(f"the learned policy needs one gate of {n} finite numbers per early exit",
                              hint="fit it with eecompile calibrate --policy learned")
        self.gates = [None if g is None else [float(v) for v in g] for g in gates]

    def score_with_state(self, probs, state, exit_idx):
        if exit_idx == len(self.gates) - 1:
            return np.ones(probs.shape[0], dtype=np.float32)  # the final exit always fires
        return gate_score(gate_features(probs, state.streak > 0), self.gates[exit_idx])


POLICIES: dict[str, type[ExitPolicy]] = {p.name: p for p in (MaxProb, Entropy, Margin, Patience, Learned)}
if tuple(POLICIES) != POLICY_NAMES:  # pragma: no cover - a new name needs its class here
    raise InternalError(f"policy classes {tuple(POLICIES)} do not match eecompile.core.names {POLICY_NAMES}")


def check_policy_name(name: str) -> str:
    if name not in POLICIES:
        raise PolicyError(f"unknown exit policy {name!r}", hint=f"use one of {', '.join(POLICIES)}")
    return name


def make_policy(name: str, thresholds: list[float] | float | None, n_exits: int,
                gates: list[list[float] | None] | None = None) -> ExitPolicy:
    """Build a policy with one threshold per exit (a scalar applies to all early exits;
    None: the policy's default). ``gates``: the learned policy's per-exit gates."""
    check_policy_name(name)
    if thresholds is None:
        thresholds = DEFAULT_THRESHOLDS[name]
    if np.ndim(thresholds) == 0:
        thresholds = [float(thresholds)] * n_exits
    thresholds = list(thresholds)
    if len(thresholds) == n_exits - 1:
        thresholds.append(POLICY_INFO[name].lo)  # the final exit always fires; its threshold is unused
    if len(thresholds) != n_exits:
        raise PolicyError(f"{len(thresholds)} thresholds for {n_exits} exits",
                          hint=f"give one threshold, or one per early exit ({n_exits - 1})")
    if name == "learned":
        return Learned(thresholds, gates)
    return POLICIES[name](thresholds)


def policy_of_exits(exits) -> ExitPolicy:
    """The policy a bundle's exits record (``exits``: objects with ``policy``, ``threshold`` and ``gate``)."""
    names = {e.policy for e in exits}
    if len(names) != 1:
        raise PolicyError(f"exits use different policies {sorted(names)}", hint="set one policy for all exits")
    return make_policy(names.pop(), [e.threshold for e in exits], len(exits),
                       gates=[getattr(e, "gate", None) for e in exits])


def kept_of_exits(exits) -> list[bool]:
    """Which exits a bundle keeps (a dropped exit is never evaluated; the final one is always kept)."""
    kept = [bool(getattr(e, "kept", True)) for e in exits]
    kept[-1] = True
    return kept


def simulate(policy: ExitPolicy, exit_logits: list[np.ndarray], max_exit: int | None = None,
             kept: list[bool] | None = None) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Apply ``policy`` to precomputed logits of every exit (all samples, all exits).

    Returns (exit index per sample, predicted class per sample, per-exit "fires" masks).
    The same decisions the runtime takes, without running any model: for validation and
    threshold sweeps. A dropped exit (``kept[k]`` false) is not evaluated: it never fires and
    does not count as the "previous exit" of patience or the learned gate.
    """
    n = exit_logits[0].shape[0]
    last = len(exit_logits) - 1 if max_exit is None else max_exit
    state = PolicyState.new(n)
    exit_idx = np.full(n, last, dtype=np.int64)
    decided = np.zeros(n, dtype=bool)
    fires_per_exit = []
    for k in range(last + 1):
        if kept is not None and not kept[k] and k != last:
            fires_per_exit.append(np.zeros(n, dtype=bool))
            continue
        fires = policy.decide(k, exit_logits[k], state)
        if k == last:
            fires = np.ones(n, dtype=bool)
        fires_per_exit.append(fires)
        new = fires & ~decided
        exit_idx[new] = k
        decided |= fires
    pred = np.stack([lg.argmax(axis=1) for lg in exit_logits[: last + 1]], axis=1)[np.arange(n), exit_idx]
    return exit_idx, pred, fires_per_exit
