"""What an inference costs when it stops at exit k, on the device: from a device profile
(latency, or energy) or, without one, from MACs.

The profile measures every exit with every head on the way evaluated (exit_cost[k]) and, for
bundles with trunk graphs, the stages with their exit dropped; so the cost of a rule that drops
exit s is exit_cost[k] minus, for every dropped s < k, what dropping s saves (its head and
decision: fused stage - trunk stage + decision). Latencies come from the measured distribution
(the trimmed mean for the search's mean budgets, the plain mean for the cost guarantee -- a
bound on the mean must not drop the tail -- the quantiles for p95 budgets and the anytime
table); energy per inference is the profile's measured (or estimated) figure, and a dropped
head's energy is its time at the exit's average power.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eecompile.bundle.io import Bundle
from eecompile.errors import CalibrationError
from eecompile.profile.schema import bundle_profiles, check_profile_for, load_profile

QUANTILE_KEYS = (("min", 0.0), ("p10", 0.10), ("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("max", 1.0))


@dataclass
class CostModel:
    kind: str  # "latency" | "energy" | "macs"
    unit: str  # "us" | "mJ" | "MMAC"
    source: str
    exit_cost: np.ndarray  # (K,) mean cost of stopping at exit k with every exit up to k kept
    drop_saving: np.ndarray  # (K,) what dropping exit s saves every inference that passes stage s
    quantiles: np.ndarray | None = None  # (K, 6) latency quantiles (QUANTILE_KEYS) per exit, us
    label: str = "measured"  # energy: measured | estimated
    extras: dict = field(default_factory=dict)

    @property
    def n_exits(self) -> int:
        return len(self.exit_cost)

    def per_exit(self, kept: np.ndarray) -> np.ndarray:
        """(K,) cost of stopping at each exit under a kept-exits mask."""
        dropped = (~kept[:-1]).astype(float) * self.drop_saving[:-1]
        saved = np.concatenate([[0.0], np.cumsum(dropped)])
        return self.exit_cost - saved

    def oracle(self, earliest_correct: np.ndarray) -> np.ndarray:
        """Per sample: the cost of stopping at its earliest correct exit with no other head run
        (the bound no rule can beat)."""
        return self.per_exit(np.zeros(self.n_exits, dtype=bool))[earliest_correct]

    def p95(self, exit_idx: np.ndarray, kept: np.ndarray) -> float:
        """95th percentile of the per-inference latency: the mixture of the exits' measured
        distributions (piecewise linear between their quantiles), weighted by the exit shares."""
        if self.quantiles is None:
            return float(np.percentile(self.per_exit(kept)[exit_idx], 95))
        shift = self.exit_cost - self.per_exit(kept)
        w = np.bincount(exit_idx, minlength=self.n_exits) / len(exit_idx)
        qs = np.array([q for _, q in QUANTILE_KEYS])
        lo, hi = float(self.quantiles[:, 0].min() - shift.max()), float(self.quantiles[:, -1].max())

        def cdf(x: float) -> float:
            return float(sum(wk * np.interp(x, self.quantiles[k] - shift[k], qs) for k, wk in enumerate(w) if wk > 0))

        for _ in range(60):  # bisection on the mixture's CDF
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if cdf(mid) < 0.95 else (lo, mid)
        return 0.5 * (lo + hi)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "unit": self.unit, "source": self.source, "label": self.label,
                "exit_cost": self.exit_cost.tolist(), "drop_saving": self.drop_saving.tolist(), **self.extras}


def mac_costs(bundle: Bundle) -> CostModel:
    stages = bundle.manifest.stages
    macs = np.cumsum([s.macs for s in stages]) / 1e6
    heads = np.array([s.head_macs for s in stages], dtype=float) / 1e6
    return CostModel("macs", "MMAC", "MACs (no device profile)", macs, heads)


def find_profile(bundle: Bundle, path: str | Path | None) -> dict | None:
    """The profile to calibrate with: the one given, else the bundle's single usable profile."""
    if path is not None:
        return check_profile_for(load_profile(path), bundle, where=f"profile {path}")
    usable = [(p, prof) for p, prof, status in bundle_profiles(bundle) if status == "ok"]
    if len(usable) > 1:
        raise CalibrationError(f"the bundle has {len(usable)} device profiles ({', '.join(p.stem for p, _ in usable)})",
                               hint="choose one with --profile BUNDLE/profiles/<device>.json")
    return usable[0][1] if usable else None


def profile_costs(prof: dict, kind: str, stat: str = "tmean") -> CostModel:
    """Latency (us) or energy (mJ) per exit from a device profile."""
    exits = prof["exits"]
    k_exits = len(exits)
    lat = np.array([e["latency_us"][stat] for e in exits])
    full = exits[-1]["stages_us"]
    dec = np.array([e["decision_us"][stat] for e in exits])
    dec_step = np.diff(np.concatenate([[0.0], dec]))
    trunk = prof.get("trunk_path")
    saving = np.zeros(k_exits)
    for s in range(k_exits - 1):
        head = full[s][stat] - trunk["stages_us"][s][stat] if trunk else 0.0
        saving[s] = max(0.0, head) + max(0.0, dec_step[s])
    quantiles = np.array([[e["latency_us"][k] for k, _ in QUANTILE_KEYS] for e in exits])
    dev = prof["device"]
    src = f"profile {dev['id']} ({dev['model']}, {prof['created_utc'][:10]})"
    if kind == "latency":
        return CostModel("latency", "us", src, lat, saving, quantiles, extras={"stat": stat})
    energy = [e.get("energy") for e in exits]
    if any(e is None for e in energy):
        raise CalibrationError(f"{src} has no energy figures ({prof['energy'].get('reason')})",
                               hint="profile with energy measurement, or with --power-w W for an estimate")
    mj = np.array([e["mj_per_inference"] for e in energy])
    power = mj / np.maximum(lat, 1e-9)  # mJ per us at each exit: a dropped head's energy is its time at that power
    return CostModel("energy", "mJ", src, mj, saving * power[-1], None, label=energy[-1]["label"],
                     extras={"method": energy[-1]["method"]})
