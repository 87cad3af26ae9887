"""Validation of every exported exit against the PyTorch reference.

Per exit: top-1 agreement, accuracy of PyTorch vs exported (with labels), SNR of the
dequantized logits, and agreement of the exit decision at the bundle's thresholds.
Every failing check is collected; the caller raises one ToleranceError with all of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from eecompile.bundle.io import Bundle
from eecompile.core.inputs import InputSpec, Inputs, as_arrays, check_inputs
from eecompile.data.datasets import Dataset
from eecompile.errors import CheckFailure, DataError, ModelLoadError, ToleranceError
from eecompile.model.contract import EarlyExitModel
from eecompile.bundle.graphs import StageExecutor, run_all_exits
from eecompile.core.policies import kept_of_exits, policy_of_exits, simulate


@dataclass
class Tolerances:
    min_top1_agreement: float  # fraction of samples with the same top-1 class as PyTorch
    max_accuracy_drop_pts: float  # PyTorch accuracy minus exported accuracy, in points
    min_snr_db: float  # SNR of dequantized logits against PyTorch logits
    min_decision_agreement: float  # fraction of samples whose exit decision matches PyTorch's

    @classmethod
    def for_target(cls, target: str) -> "Tolerances":
        if target == "tflite-int8":
            return cls(min_top1_agreement=0.98, max_accuracy_drop_pts=1.0, min_snr_db=15.0,
                       min_decision_agreement=0.95)
        if target == "tflite-dynamic":  # int8 weights and matmuls: between int8 and fp16
            return cls(min_top1_agreement=0.98, max_accuracy_drop_pts=1.0, min_snr_db=20.0,
                       min_decision_agreement=0.95)
        if target == "tflite-fp16":
            return cls(min_top1_agreement=0.999, max_accuracy_drop_pts=0.2, min_snr_db=40.0,
                       min_decision_agreement=0.995)
        return cls(min_top1_agreement=0.999, max_accuracy_drop_pts=0.1, min_snr_db=60.0,
                   min_decision_agreement=0.999)


@dataclass
class ExitMetrics:
    exit_idx: int
    top1_agreement: float
    snr_db: float
    decision_agreement: float
    accuracy_torch: float | None
    accuracy_exported: float | None


@dataclass
class ValidationReport:
    target: str
    n_samples: int
    policy: str
    thresholds: list[float]
    exits: list[ExitMetrics]
    exit_index_agreement: float
    tolerances: Tolerances
    failures: list[CheckFailure] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"target": self.target, "n_samples": self.n_samples, "policy": self.policy,
                "thresholds": self.thresholds, "exits": [asdict(e) for e in self.exits],
                "exit_index_agreement": self.exit_index_agreement, "tolerances": asdict(self.tolerances),
                "passed": not self.failures, "failures": [f.to_dict() for f in self.failures]}

    def error(self) -> ToleranceError:
        hint = "pass more representative --calib-data (e.g. NAME:train:1024), or --allow-mismatch to keep it"
        return ToleranceError(self.failures, hint=hint)


def snr_db(ref: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.sum((ref.astype(np.float64) - got) ** 2))
    signal = float(np.sum(ref.astype(np.float64) ** 2))
    if noise == 0.0:
        return float("inf")
    return float(10.0 * np.log10(signal / noise))


@torch.no_grad()
def torch_exit_logits(model: EarlyExitModel, x: Inputs, batch_size: int = 256) -> list[np.ndarray]:
    """Every exit's PyTorch logits for a batch (one array, or one per model input)."""
    model.eval()
    xs = as_arrays(x)
    outs: list[list[np.ndarray]] = [[] for _ in range(model.n_stages)]
    for i in range(0, len(xs[0]), batch_size):
        for k, o in enumerate(model(*(torch.from_numpy(a[i : i + batch_size]) for a in xs))):
            outs[k].append(o.numpy())
    return [np.concatenate(o) for o in outs]


MIN_VALIDATION_SAMPLES = 100  # below this, one sample moves an accuracy check by more than a point


def check_model_matches(bundle: Bundle, model: EarlyExitModel) -> None:
    """Refuse a reference model that is not the one the bundle was exported from (exits,
    classes, input and state shapes), before anything is trained or run."""
    m = bundle.manifest
    want = {"exits": m.n_exits, "classes": m.exits[-1].n_classes,
            "inputs": [InputSpec.of_tensor(t).describe() for t in m.input],
            "states": [[tuple(t.torch_shape[1:]) for t in s.graphs[0].outputs if t.role == "state"]
                       for s in m.stages[:-1]]}
    have = {"exits": model.n_stages, "classes": model.n_classes, "inputs": [s.describe() for s in model.input_specs],
            "states": [[tuple(s) for s in shapes] for shapes in model.state_shapes[:-1]]}
    diff = [f"{k}: bundle {want[k]}, model {have[k]}" for k in want if want[k] != have[k]]
    if diff:
        raise ModelLoadError(f"model {model.name!r} is not the model of bundle {m.name!r} ({'; '.join(diff[:2])})",
                             hint=f"pass --model with the model the bundle was exported from "
                                  f"(recorded source: {m.model_source or 'none'})")


def validate_bundle(bundle: Bundle, model: EarlyExitModel, data: Dataset, tolerances: Tolerances | None = None,
                    backend: str | None = None, quiet: bool = True,
                    data_hint: str = "give at least 100 held-out samples") -> ValidationReport:
    """Run every exit of the exported bundle and of ``model`` on ``data``; compare."""
    m = bundle.manifest
    check_model_matches(bundle, model)
    tol = tolerances or Tolerances.for_target(m.target)
    x = check_inputs(data.x, model.input_specs, "validation data")
    n = len(x[0])
    if n < MIN_VALIDATION_SAMPLES:
        raise DataError(f"validation data has {n} samples; the checks need at least {MIN_VALIDATION_SAMPLES} "
                        "(below that one sample moves an accuracy check by more than a point)", hint=data_hint)
    if data.y is not None and len(data.y) != n:
        raise DataError(f"validation data has {n} inputs but {len(data.y)} labels", hint="give one label per input")
    got = run_all_exits(StageExecutor(bundle, backend), x)
    ref = torch_exit_logits(model, x)
    policy = policy_of_exits(m.exits)
    kept = kept_of_exits(m.exits)
    exit_ref, _, fires_ref = simulate(policy, ref, kept=kept)
    exit_got, _, fires_got = simulate(policy, got, kept=kept)
    report = ValidationReport(target=m.target, n_samples=n, policy=policy.name, thresholds=policy.thresholds,
                              exits=[], exit_index_agreement=float(np.mean(exit_ref == exit_got)), tolerances=tol)
    for k in range(m.n_exits):
        p_ref, p_got = ref[k].argmax(1), got[k].argmax(1)
        acc_t = acc_e = None
        if data.y is not None:
            acc_t = float(np.mean(p_ref == data.y))
            acc_e = float(np.mean(p_got == data.y))
        em = ExitMetrics(exit_idx=k, top1_agreement=float(np.mean(p_ref == p_got)), snr_db=snr_db(ref[k], got[k]),
                         decision_agreement=float(np.mean(fires_ref[k] == fires_got[k])),
                         accuracy_torch=acc_t, accuracy_exported=acc_e)
        report.exits.append(em)
        checks = [("top1_agreement", em.top1_agreement, tol.min_top1_agreement, ">="),
                  ("snr_db", em.snr_db, tol.min_snr_db, ">="),
                  ("decision_agreement", em.decision_agreement, tol.min_decision_agreement, ">=")]
        if acc_t is not None and acc_e is not None:
            checks.append(("accuracy_drop_pts", 100 * (acc_t - acc_e), tol.max_accuracy_drop_pts, "<="))
        for metric, value, bound, op in checks:
            ok = value >= bound if op == ">=" else value <= bound
            if not ok:
                report.failures.append(CheckFailure(k, metric, value, bound, op))
    return report
