"""Budget specs: ``latency-ms=2``, ``p95-latency-ms=3``, ``energy-mj=0.5``, ``accuracy-drop=0.5``
and combinations (``accuracy-drop=0.5,latency-ms=2``).

- ``accuracy-drop=X``: the cheapest rule whose accuracy is within X points of the final exit's
- ``latency-ms=X`` / ``energy-mj=X``: the mean cost per inference at most X
- ``p95-latency-ms=X``: 95% of the inferences finish within X
With an accuracy drop, cost is minimised under every constraint; without one, accuracy is
maximised under the cost constraints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from eecompile.errors import CalibrationError

KEYS = ("accuracy-drop", "latency-ms", "p95-latency-ms", "energy-mj")
EXAMPLE = "e.g. --budget accuracy-drop=0.5 or --budget latency-ms=2,accuracy-drop=1"


@dataclass(frozen=True)
class Budget:
    accuracy_drop_pts: float | None = None
    latency_ms: float | None = None
    p95_latency_ms: float | None = None
    energy_mj: float | None = None

    @property
    def needs_latency(self) -> bool:
        return self.latency_ms is not None or self.p95_latency_ms is not None

    @property
    def minimises_cost(self) -> bool:
        """With an accuracy constraint the cost is minimised; else accuracy is maximised."""
        return self.accuracy_drop_pts is not None

    def describe(self) -> str:
        parts = []
        for key, v in (("accuracy-drop", self.accuracy_drop_pts), ("latency-ms", self.latency_ms),
                       ("p95-latency-ms", self.p95_latency_ms), ("energy-mj", self.energy_mj)):
            if v is not None:
                parts.append(f"{key}={v:g}")
        return ",".join(parts)

    def to_dict(self) -> dict:
        return {"accuracy_drop_pts": self.accuracy_drop_pts, "latency_ms": self.latency_ms,
                "p95_latency_ms": self.p95_latency_ms, "energy_mj": self.energy_mj, "spec": self.describe()}


def parse_budget(spec: str) -> Budget:
    """``KEY=VALUE[,KEY=VALUE...]`` -> Budget, or a CalibrationError naming what is wrong."""
    if not spec or not spec.strip():
        raise CalibrationError("the budget is empty", hint=EXAMPLE)
    values: dict[str, float] = {}
    for item in spec.split(","):
        key, sep, raw = item.strip().partition("=")
        key = key.strip()
        if not sep:
            raise CalibrationError(f"budget item {item.strip()!r} is not KEY=VALUE", hint=EXAMPLE)
        if key not in KEYS:
            raise CalibrationError(f"unknown budget {key!r}", hint=f"use {', '.join(KEYS)}; {EXAMPLE}")
        if key in values:
            raise CalibrationError(f"budget {key!r} is given twice", hint="give each once")
        try:
            v = float(raw)
        except ValueError:
            raise CalibrationError(f"budget {key}={raw!r} is not a number", hint=EXAMPLE) from None
        if not math.isfinite(v):
            raise CalibrationError(f"budget {key}={raw} is not finite", hint=EXAMPLE)
        if key == "accuracy-drop" and not 0 <= v <= 100:
            raise CalibrationError(f"accuracy-drop={v:g} is not in 0..100 points", hint="e.g. accuracy-drop=0.5")
        if key != "accuracy-drop" and v <= 0:
            raise CalibrationError(f"{key}={v:g} is not a positive cost", hint=EXAMPLE)
        values[key] = v
    return Budget(accuracy_drop_pts=values.get("accuracy-drop"), latency_ms=values.get("latency-ms"),
                  p95_latency_ms=values.get("p95-latency-ms"), energy_mj=values.get("energy-mj"))
