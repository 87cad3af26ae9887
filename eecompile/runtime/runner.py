"""The Python runtime: run a bundle stage by stage and stop each sample at its first confident exit.

Samples leave the batch as they exit; the rest go on to the next stage. Graphs with a
fixed batch of 1 (TFLite, as on a device) are invoked once per remaining sample and
timed per sample; graphs with a free batch (ONNX) run the remaining samples at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from eecompile.bundle.io import Bundle, load_bundle
from eecompile.bundle.manifest import GraphSpec, TensorSpec
from eecompile.errors import BundleError, EecompileError, InputError
from eecompile.runtime.backends import GraphRunner, default_backend, open_graph, run_timed
from eecompile.runtime.policies import ExitPolicy, PolicyState, make_policy, softmax
from eecompile.runtime.quant import dequantize, requantize, to_graph_input


@dataclass
class RunResult:
    """Per-sample outcome of a run. Index ``i`` is the i-th input sample."""

    class_idx: np.ndarray  # (N,) predicted class
    exit_idx: np.ndarray  # (N,) exit where the sample stopped
    probs: np.ndarray  # (N, C) softmax at the exit taken
    stage_time_us: np.ndarray  # (N, n_stages) wall time per stage, 0 for stages not run
    exit_logits: list[np.ndarray] = field(default_factory=list)  # with keep_logits: (N, C) per exit, NaN if not run

    @property
    def latency_us(self) -> np.ndarray:
        return self.stage_time_us.sum(axis=1)

    def to_rows(self, class_names: list[str]) -> list[dict]:
        return [{"sample": i, "class_idx": int(c), "class": class_names[c] if c < len(class_names) else str(c),
                 "exit_idx": int(e), "confidence": float(self.probs[i].max()),
                 "stage_time_us": [round(float(t), 2) for t in self.stage_time_us[i]]}
                for i, (c, e) in enumerate(zip(self.class_idx, self.exit_idx))]


class Runtime:
    """Runs a bundle with early exits.

    Example:
        >>> rt = Runtime("out/bundle")
        >>> res = rt.run(x, policy="max-prob", thresholds=0.9)
        >>> res.class_idx, res.exit_idx
    """

    def __init__(self, bundle: Bundle | str | os.PathLike, backend: str | None = None, n_threads: int = 1) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        m = self.bundle.manifest
        self.manifest = m
        self.backend = backend or default_backend(m.target)
        self.runners: list[list[GraphRunner]] = [
            [open_graph(self.bundle.path_of(g), g, self.backend, n_threads) for g in stage.graphs]
            for stage in m.stages
        ]
        self.input_specs: list[TensorSpec] = m.input
        self.class_names = m.exits[-1].class_names

    @property
    def n_exits(self) -> int:
        return self.manifest.n_exits

    def default_policy(self) -> ExitPolicy:
        names = {e.policy for e in self.manifest.exits}
        if len(names) != 1:
            raise BundleError(f"exits use different policies {sorted(names)}", hint="set one policy for all exits")
        return make_policy(names.pop(), [e.threshold for e in self.manifest.exits], self.n_exits)

    def check_input(self, x: np.ndarray) -> np.ndarray:
        spec = self.input_specs[0]
        shape = tuple(spec.torch_shape[1:])
        if not isinstance(x, np.ndarray):
            raise InputError(f"input is a {type(x).__name__}, expected a numpy array", hint="pass np.ndarray")
        if tuple(x.shape) == shape:
            x = x[None]
        if tuple(x.shape[1:]) != shape:
            raise InputError(f"input shape {tuple(x.shape)} does not match the bundle's (N, {', '.join(map(str, shape))})",
                             hint="inputs use the PyTorch model's layout (NCHW for images)")
        if x.dtype not in (np.float32, np.float64):
            raise InputError(f"input dtype {x.dtype}, expected float32",
                             hint="scale images to float32 in the range the model was trained on")
        if x.shape[0] == 0:
            raise InputError("input batch is empty", hint="pass at least one sample")
        if not np.isfinite(x).all():
            raise InputError("input contains NaN or inf", hint="clean the input before running it")
        return x.astype(np.float32, copy=False)

    def run(self, x: np.ndarray, policy: ExitPolicy | str | None = None, thresholds: list[float] | float | None = None,
            max_exit: int | None = None, keep_logits: bool = False, no_early_exit: bool = False) -> RunResult:
        """Run a batch ``x`` (PyTorch layout). ``max_exit`` caps the exit index (budget-forced exit);
        ``no_early_exit`` runs every sample through every stage (all exits evaluated)."""
        x = self.check_input(x)
        pol = self._policy(policy, thresholds)
        last = self.n_exits - 1
        if max_exit is not None:
            if not (0 <= max_exit <= last):
                raise EecompileError(f"max_exit {max_exit} out of range", hint=f"use 0..{last}")
            last = max_exit
        n = x.shape[0]
        n_classes = self.manifest.exits[-1].n_classes
        res = RunResult(np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros((n, n_classes), np.float32),
                        np.zeros((n, self.manifest.n_exits), np.float64))
        if keep_logits:
            res.exit_logits = [np.full((n, n_classes), np.nan, np.float32) for _ in range(self.n_exits)]
        active = np.arange(n)
        state = [to_graph_input(x, spec) for spec in self.input_specs]
        pstate = PolicyState.new(n)
        for k in range(last + 1):
            state, logits_q, times = self._run_stage(k, state)
            res.stage_time_us[active, k] = times
            logits = dequantize(logits_q, self._logits_spec(k).quant)
            if keep_logits:
                res.exit_logits[k][active] = logits
            fire = pol.decide(k, logits, pstate)
            if k == last:
                fire = np.ones_like(fire)
            elif no_early_exit:
                fire = np.zeros_like(fire)
            done = active[fire]
            probs = softmax(logits[fire])
            res.class_idx[done] = probs.argmax(axis=1)
            res.exit_idx[done] = k
            res.probs[done] = probs
            keep = ~fire
            active = active[keep]
            if active.size == 0:
                break
            state = [s[keep] for s in state]
            pstate = pstate.take(keep)
        return res

    def _policy(self, policy: ExitPolicy | str | None, thresholds) -> ExitPolicy:
        if isinstance(policy, ExitPolicy):
            return policy
        if policy is None and thresholds is None:
            return self.default_policy()
        name = policy or self.manifest.exits[0].policy
        if thresholds is None:
            thresholds = [e.threshold for e in self.manifest.exits] if name == self.manifest.exits[0].policy else None
        if thresholds is None:
            from eecompile.runtime.policies import DEFAULT_THRESHOLDS

            thresholds = DEFAULT_THRESHOLDS[name]
        return make_policy(name, thresholds, self.n_exits)

    def _logits_spec(self, stage_idx: int) -> TensorSpec:
        for g in self.manifest.stages[stage_idx].graphs:
            for t in g.outputs:
                if t.role == "logits":
                    return t
        raise BundleError(f"stage {stage_idx} has no logits output", hint="re-export the bundle")

    def _run_stage(self, k: int, state: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Run stage ``k`` for every remaining sample. Returns (next state, int/float logits, time per sample)."""
        stage = self.manifest.stages[k]
        runners = self.runners[k]
        n = state[0].shape[0]
        if all(not r.fixed_batch for r in runners):
            (new_state, logits), t_us = self._run_graphs(stage.graphs, runners, state)
            return new_state, logits, np.full(n, t_us / max(n, 1))
        outs_state: list[list[np.ndarray]] = []
        outs_logits = []
        times = np.zeros(n)
        for i in range(n):
            (s, lg), times[i] = self._run_graphs(stage.graphs, runners, [a[i : i + 1] for a in state])
            outs_state.append(s)
            outs_logits.append(lg)
        new_state = [np.concatenate([s[j] for s in outs_state]) for j in range(len(outs_state[0]))]
        return new_state, np.concatenate(outs_logits), times

    def _run_graphs(self, graphs: list[GraphSpec], runners: list[GraphRunner], state: list[np.ndarray]):
        t_total = 0.0
        new_state: list[np.ndarray] = []
        logits = None
        for g, r in zip(graphs, runners):
            src = state if g.kind != "head" else new_state
            inputs = [_maybe_requant(a, spec) for a, spec in zip(src, g.inputs)]
            outs, t_us = run_timed(r, inputs)
            t_total += t_us
            for spec, arr in zip(g.outputs, outs):
                if spec.role == "logits":
                    logits = arr
                else:
                    new_state.append(arr)
        return (new_state, logits), t_total


def _maybe_requant(arr: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.requant_from is None or spec.quant is None:
        return arr
    return requantize(arr, spec.requant_from, spec.quant, spec.dtype)
