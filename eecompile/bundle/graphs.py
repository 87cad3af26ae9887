"""Running a bundle's graphs: one backend class per runtime library, and ``StageExecutor``,
which runs stage k of a bundle on a batch (requantizing boundaries, timing every call).

Backends: LiteRT (default for TFLite), TensorFlow's ``tf.lite.Interpreter``, ONNX Runtime.
A backend sees arrays in the graph's own layout and dtype (int8 for full-integer graphs).
This sits below both the export (which runs converted int8 stages to calibrate the next
one, and validates) and the early-exit runtime, which adds exit policies on top.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from eecompile.bundle.manifest import GraphSpec, TensorSpec
from eecompile.core.names import BACKENDS, ONNX_BACKENDS, RETIRED_BACKENDS
from eecompile.core.quant import dequantize, requantize, to_graph_input
from eecompile.errors import BackendError, BundleError, InternalError

if TYPE_CHECKING:
    from eecompile.bundle.io import Bundle


class GraphRunner(Protocol):
    fixed_batch: bool

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run the graph on one call's worth of inputs (batch 1 when ``fixed_batch``)."""


def _interpreter_class(backend: str):
    try:
        if backend == "litert":
            from ai_edge_litert.interpreter import Interpreter
        else:
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
    except (ImportError, AttributeError) as exc:
        raise BackendError(f"backend {backend!r} is not importable: {exc}",
                           hint="pip install ai-edge-litert==2.3.0 (or reinstall eecompile)") from exc
    return Interpreter


class TFLiteRunner:
    """A TFLite graph on an Interpreter, driven through tensor indices.

    (``get_signature_runner`` keeps references to internal buffers, after which a
    plain ``invoke`` raises, so we use indices recorded in the manifest instead.)
    """

    fixed_batch = True

    def __init__(self, path: Path, graph: GraphSpec, backend: str = "litert", n_threads: int = 1) -> None:
        Interpreter = _interpreter_class(backend)
        try:
            self.interp = Interpreter(model_path=str(path), num_threads=n_threads)
            self.interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"{path.name} cannot be loaded by {backend}: {exc}",
                              hint="the model file is corrupt or was built for another runtime; re-export") from exc
        self.in_idx = [t.index for t in graph.inputs]
        self.out_idx = [t.index for t in graph.outputs]
        details = {d["index"]: d for d in self.interp.get_input_details() + self.interp.get_output_details()}
        for t in graph.inputs + graph.outputs:
            d = details.get(t.index)
            if d is None or list(d["shape"]) != t.shape or np.dtype(d["dtype"]).name != t.dtype:
                raise BundleError(f"{path.name}: tensor {t.name} does not match the manifest",
                                  hint="the manifest and model file disagree; re-export the bundle")

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        for idx, arr in zip(self.in_idx, inputs):
            self.interp.set_tensor(idx, arr)
        self.interp.invoke()
        return [self.interp.get_tensor(idx) for idx in self.out_idx]


class OnnxRunner:
    fixed_batch = False

    def __init__(self, path: Path, graph: GraphSpec, n_threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendError(f"onnxruntime is not importable: {exc}", hint="pip install onnxruntime") from exc
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = n_threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped Fail/InvalidProtobuf errors
            raise BundleError(f"{path.name} cannot be loaded by onnxruntime: {exc}",
                              hint="the model file is corrupt; re-export the bundle") from exc
        self.in_names = [t.name for t in graph.inputs]
        self.out_names = [t.name for t in graph.outputs]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return self.sess.run(self.out_names, dict(zip(self.in_names, inputs)))


def default_backend(target: str) -> str:
    return "onnxruntime" if target == "onnx" else "litert"


def check_backend(backend: str, target: str) -> str:
    """A backend that can run ``target``'s graphs, or a BackendError that says which can."""
    if backend in RETIRED_BACKENDS:
        raise BackendError(f"backend {backend!r} is no longer offered: {RETIRED_BACKENDS[backend]}",
                           hint="use --backend litert (the default for TFLite bundles)")
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}", hint=f"use one of {', '.join(BACKENDS)}")
    if (target == "onnx") != (backend in ONNX_BACKENDS):
        raise BackendError(f"backend {backend!r} cannot run a {target} bundle",
                           hint=f"use {default_backend(target)} for {target} bundles")
    return backend


def check_threads(n_threads: int) -> int:
    if isinstance(n_threads, bool) or not isinstance(n_threads, int) or not 1 <= n_threads <= 256:
        raise BackendError(f"thread count {n_threads!r} is not a whole number in 1..256",
                           hint="pass --threads 1 (or the number of cores to use)")
    return n_threads


def open_graph(path: Path, graph: GraphSpec, backend: str, n_threads: int = 1) -> GraphRunner:
    check_threads(n_threads)
    if graph.file.endswith(".onnx"):
        check_backend(backend, "onnx")
        return OnnxRunner(path, graph, n_threads)
    check_backend(backend, "tflite-int8")
    return TFLiteRunner(path, graph, backend, n_threads)


def run_timed(runner: GraphRunner, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
    """Run and return (outputs, wall time in microseconds)."""
    t0 = time.perf_counter_ns()
    out = runner.run(inputs)
    return out, (time.perf_counter_ns() - t0) / 1e3


def maybe_requant(arr: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Move a producer's int8 state onto the consumer's grid where the bundle says so."""
    if spec.requant_from is None or spec.quant is None:
        return arr
    return requantize(arr, spec.requant_from, spec.quant, spec.dtype)


class StageExecutor:
    """Opens every graph of a bundle once and runs stage k on a batch of states.

    Graphs with a fixed batch of 1 (TFLite, as on a device) are invoked once per sample
    and timed per sample; graphs with a free batch (ONNX) run the batch at once.
    """

    def __init__(self, bundle: "Bundle", backend: str | None = None, n_threads: int = 1) -> None:
        m = bundle.manifest
        self.manifest = m
        self.backend = check_backend(backend or default_backend(m.target), m.target)
        check_threads(n_threads)
        self.runners: list[list[GraphRunner]] = [
            [open_graph(bundle.path_of(g), g, self.backend, n_threads) for g in stage.graphs] for stage in m.stages]
        self.trunk_runners: list[GraphRunner | None] = [
            open_graph(bundle.path_of(s.trunk), s.trunk, self.backend, n_threads) if s.trunk else None
            for s in m.stages]
        self.logits_specs = [self._logits_spec(k) for k in range(len(m.stages))]

    def _logits_spec(self, stage_idx: int) -> TensorSpec:
        for g in self.manifest.stages[stage_idx].graphs:
            for t in g.outputs:
                if t.role == "logits":
                    return t
        raise BundleError(f"stage {stage_idx} has no logits output", hint="re-export the bundle")

    def run_stage(self, k: int, state: list[np.ndarray], trunk: bool = False
                  ) -> tuple[list[np.ndarray], np.ndarray | None, np.ndarray]:
        """Run stage ``k`` for every sample of ``state`` (graph layout and dtype).
        Returns (next state, raw logits, wall time per sample in us). ``trunk``: the stage's
        exit is dropped: run the segment without its head (the trunk graph, or the segment
        graph of a split-heads bundle); the logits are None. A fused bundle without trunks
        runs the fused graph and drops the logits."""
        stage = self.manifest.stages[k]
        graphs, runners = stage.graphs, self.runners[k]
        if trunk and stage.trunk is not None:
            graphs, runners = [stage.trunk], [self.trunk_runners[k]]
        elif trunk and graphs[0].kind == "segment":
            graphs, runners = graphs[:1], runners[:1]
        n = state[0].shape[0]
        if all(not r.fixed_batch for r in runners):
            (new_state, logits), t_us = self._run_graphs(graphs, runners, state)
            return new_state, None if trunk else logits, np.full(n, t_us / max(n, 1))
        outs_state: list[list[np.ndarray]] = []
        outs_logits = []
        times = np.zeros(n)
        for i in range(n):
            (s, lg), times[i] = self._run_graphs(graphs, runners, [a[i : i + 1] for a in state])
            outs_state.append(s)
            outs_logits.append(lg)
        new_state = [np.concatenate([s[j] for s in outs_state]) for j in range(len(outs_state[0]))]
        return new_state, None if trunk else np.concatenate(outs_logits), times

    @staticmethod
    def _run_graphs(graphs: list[GraphSpec], runners: list[GraphRunner], state: list[np.ndarray]):
        t_total = 0.0
        new_state: list[np.ndarray] = []
        logits = None
        for g, r in zip(graphs, runners):
            src = state if g.kind != "head" else new_state
            inputs = [maybe_requant(a, spec) for a, spec in zip(src, g.inputs)]
            outs, t_us = run_timed(r, inputs)
            t_total += t_us
            for spec, arr in zip(g.outputs, outs):
                if spec.role == "logits":
                    logits = arr
                else:
                    new_state.append(arr)
        if logits is None and graphs[-1].kind != "segment":
            raise InternalError("a stage ran without producing logits (the bundle loader checks for them)")
        return (new_state, logits), t_total


def run_all_exits(executor: StageExecutor, x) -> list[np.ndarray]:
    """Every exit's dequantized logits for a batch ``x`` in the model's (PyTorch) layout (one
    array, or a tuple with one per model input): every sample runs through every stage (no
    early exit). For validation and calibration."""
    from eecompile.core.inputs import as_arrays

    state = [to_graph_input(a, spec) for a, spec in zip(as_arrays(x), executor.manifest.input, strict=True)]
    out = []
    for k in range(len(executor.manifest.stages)):
        state, logits, _ = executor.run_stage(k, state)
        out.append(dequantize(logits, executor.logits_specs[k].quant))
    return out
