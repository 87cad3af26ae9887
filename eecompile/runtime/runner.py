"""The Python runtime: run a bundle stage by stage and stop each sample at its first confident exit.

Samples leave the batch as they exit; the rest go on to the next stage. Graphs with a
fixed batch of 1 (TFLite, as on a device) are invoked once per remaining sample and
timed per sample; graphs with a free batch (ONNX) run the remaining samples at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from eecompile.bundle.graphs import StageExecutor
from eecompile.bundle.io import Bundle, load_bundle
from eecompile.bundle.manifest import TensorSpec
from eecompile.core.text import Encoded, TextEncoder
from eecompile.core.inputs import InputSpec, Inputs, check_inputs
from eecompile.core.policies import (ExitPolicy, PolicyState, check_policy_name, kept_of_exits, make_policy,
                                     policy_of_exits, softmax)
from eecompile.core.quant import dequantize, to_graph_input
from eecompile.errors import BundleError, InputError, PolicyError


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
        self.executor = StageExecutor(self.bundle, backend, n_threads)
        self.backend = self.executor.backend
        self.input_specs: list[TensorSpec] = m.input
        self.inputs = [InputSpec.of_tensor(t) for t in m.input]  # what the model takes, one per input
        self.class_names = m.exits[-1].class_names
        self._text: TextEncoder | None = None

    @property
    def n_exits(self) -> int:
        return self.manifest.n_exits

    def default_policy(self) -> ExitPolicy:
        return policy_of_exits(self.manifest.exits)

    def encode_text(self, texts: list[str] | str) -> Encoded:
        """Texts -> the model's ids with the bundle's tokenizer (truncated/padded to its length);
        InputError when the bundle has none or a text is empty."""
        if self._text is None:
            self._text = TextEncoder.from_bundle(self.bundle)
        return self._text.encode(texts)

    def run_text(self, texts: list[str] | str, **kwargs) -> tuple[RunResult, Encoded]:
        """``run`` on texts: also returns what encoding did (tokens, truncation, unknown words)."""
        enc = self.encode_text(texts)
        return self.run(enc.model_inputs, **kwargs), enc

    def check_input(self, x: Inputs) -> tuple[np.ndarray, ...]:
        """A batch checked against the bundle's inputs (core/inputs.py), one array per input."""
        return check_inputs(x, self.inputs, "input", error=InputError)

    def run(self, x: Inputs, policy: ExitPolicy | str | None = None, thresholds: list[float] | float | None = None,
            max_exit: int | None = None, keep_logits: bool = False, no_early_exit: bool = False,
            kept: list[bool] | None = None, deadline_us: float | None = None) -> RunResult:
        """Run a batch ``x`` (PyTorch layout; a tuple with one array per input for a model with
        several, e.g. (ids, attention_mask)). ``max_exit`` caps the exit index (budget-forced exit);
        ``deadline_us`` caps it at the deepest exit whose profiled p99 completion fits (the
        bundle's anytime table, written by eecompile calibrate); when none fits, at exit 0, as the
        C runtime does (``exit_for_deadline`` returns None then: check it first to skip instead).
        ``no_early_exit`` runs every sample through every stage (all exits evaluated); ``kept``
        overrides the bundle's kept exits (a dropped exit's head is not run)."""
        xs = self.check_input(x)
        pol = self._policy(policy, thresholds)
        last = self.n_exits - 1
        if max_exit is not None:
            if isinstance(max_exit, bool) or not isinstance(max_exit, (int, np.integer)) or not 0 <= max_exit <= last:
                raise PolicyError(f"max_exit {max_exit} out of range", hint=f"use 0..{last}")
            last = max_exit
        if deadline_us is not None:
            fits = self.exit_for_deadline(deadline_us)
            last = min(last, 0 if fits is None else fits)  # none fits: the earliest exit, as the C runtime does
        kept = self._kept(kept) if not no_early_exit else [True] * self.n_exits
        n = xs[0].shape[0]
        n_classes = self.manifest.exits[-1].n_classes
        res = RunResult(np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros((n, n_classes), np.float32),
                        np.zeros((n, self.manifest.n_exits), np.float64))
        if keep_logits:
            res.exit_logits = [np.full((n, n_classes), np.nan, np.float32) for _ in range(self.n_exits)]
        active = np.arange(n)
        state = [to_graph_input(a, spec) for a, spec in zip(xs, self.input_specs)]
        pstate = PolicyState.new(n)
        for k in range(last + 1):
            dropped = not kept[k] and k != last
            state, logits_q, times = self.executor.run_stage(k, state, trunk=dropped)
            res.stage_time_us[active, k] = times
            if dropped:  # not evaluated: no decision, and patience/the gate skip it
                continue
            logits = dequantize(logits_q, self.executor.logits_specs[k].quant)
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

    def _kept(self, kept: list[bool] | None) -> list[bool]:
        if kept is None:
            return kept_of_exits(self.manifest.exits)
        if len(kept) != self.n_exits:
            raise PolicyError(f"kept has {len(kept)} entries for {self.n_exits} exits", hint="give one per exit")
        return [bool(v) for v in kept[:-1]] + [True]

    def exit_for_deadline(self, deadline_us: float) -> int | None:
        """The deepest exit whose profiled p99 time to complete fits ``deadline_us`` (the anytime
        table that eecompile calibrate writes from a device profile), or None when not even exit 0
        fits (then no inference completes in time: skip it or give it more time)."""
        table = self.manifest.decision.get("anytime")
        if not table:
            raise PolicyError("this bundle has no anytime table, so a deadline cannot be mapped to an exit",
                              hint="calibrate it with a device profile: eecompile calibrate BUNDLE --profile ...")
        if not np.isfinite(deadline_us) or deadline_us <= 0:
            raise PolicyError(f"deadline {deadline_us} us is not a positive time", hint="e.g. deadline_us=500")
        fits = [row["exit"] for row in table if row["p99_latency_us"] <= deadline_us]
        return max(fits) if fits else None

    def exit_for_energy(self, energy_mj: float) -> int | None:
        """The deepest exit whose p99 energy per inference fits ``energy_mj`` (HarvNet: the
        energy harvested for this inference -> the exit to allow; pass it as ``max_exit``), or
        None when not even exit 0 fits (wait for more energy). The p99 energy is an estimate
        (the anytime table's ``p99_energy_label``: the profile's mean energy, measured or
        estimated, scaled by the exit's p99/p50 latency ratio). Needs an anytime table computed
        from a profile with energy."""
        table = self.manifest.decision.get("anytime")
        if not table or any("p99_energy_mj" not in row for row in table):
            raise PolicyError("this bundle's anytime table has no energy column",
                              hint="profile with energy (or --power-w), then eecompile calibrate BUNDLE")
        if not np.isfinite(energy_mj) or energy_mj <= 0:
            raise PolicyError(f"energy {energy_mj} mJ is not a positive amount", hint="e.g. energy_mj=0.5")
        fits = [row["exit"] for row in table if row["p99_energy_mj"] <= energy_mj]
        return max(fits) if fits else None

    def _policy(self, policy: ExitPolicy | str | None, thresholds) -> ExitPolicy:
        if isinstance(policy, ExitPolicy):
            return policy
        if policy is None and thresholds is None:
            return self.default_policy()
        name = check_policy_name(policy or self.manifest.exits[0].policy)
        same = name == self.manifest.exits[0].policy
        if thresholds is None and same:
            thresholds = [e.threshold for e in self.manifest.exits]
        gates = [e.gate for e in self.manifest.exits] if same else None
        return make_policy(name, thresholds, self.n_exits, gates=gates)

