"""Writing a calibration into the bundle: the exits' policy, thresholds, kept flags and gates,
the anytime table, and the ``decision`` section with the previous calibration kept in a
history list; the manifest and ``decision.hash`` are rewritten atomically (the model files do
not change, so their checksums stay), and the report and the Pareto plot go beside them in
``calibration/``. ``eecompile harness`` then compiles the new rule into the generated C.
"""

from __future__ import annotations

import json

from eecompile.bundle.io import Bundle
from eecompile.util import atomic_write_text

from .search import Rule

CALIBRATION_DIR = "calibration"


def write_back(bundle: Bundle, rule: Rule, report: dict) -> dict:
    m = bundle.manifest
    from .calibrate import _rule_dict

    rd = _rule_dict(rule)
    for e in m.exits:
        e.policy = rd["policy"]
        e.threshold = rd["thresholds"][e.exit_idx]
        e.kept = rd["kept"][e.exit_idx]
        e.gate = None if rd["gates"] is None else rd["gates"][e.exit_idx]
    previous = m.decision.get("calibration")
    history = list(m.decision.get("history", []))
    if previous is not None:
        history.append(previous)
    summary = {"created_utc": report["created_utc"], "budget": report["budget"]["spec"], "policy": rd["policy"],
               "thresholds": rd["thresholds"], "kept": rd["kept"], "profile": report["profile"],
               "primary_cost": report["primary_cost"], "data": report["data"],
               "holdout": {k: report["holdout"][k] for k in ("accuracy", "final_accuracy", "drop_pts", "cost",
                                                             "ratio_to_full", "ratio_to_oracle")},
               "guarantee": None if report["guarantee"] is None else {
                   k: report["guarantee"].get(k) for k in ("eps", "delta", "cost_kind", "cost_bound", "cost_basis",
                                                         "n_calibration")}}
    m.decision = {"calibration": summary, "history": history, "anytime": report.get("anytime")}
    bundle.save_manifest()
    out_dir = bundle.root / CALIBRATION_DIR
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2, default=float))
    from .report import plot_frontier

    plot_frontier(report, out_dir / "pareto.png")
    return {"manifest": str(bundle.root / "manifest.json"), "report": str(out_dir / "report.json"),
            "plot": str(out_dir / "pareto.png"), "decision_hash": m.decision_hash}
