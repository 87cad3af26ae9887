"""Backends that run one stage graph: LiteRT (default for TFLite), tflite-runtime, ONNX Runtime.

One file per backend would be overkill at this size; each backend is one small class
with the same two methods. A backend sees arrays in the graph's own layout and dtype
(int8 for full-integer graphs); quantization and layouts are the runtime's business.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Protocol

import numpy as np

from eecompile.bundle.manifest import GraphSpec
from eecompile.errors import BackendError, BundleError

TFLITE_BACKENDS = ("litert", "tflite-runtime", "tensorflow")
ONNX_BACKENDS = ("onnxruntime",)
BACKENDS = TFLITE_BACKENDS + ONNX_BACKENDS


class GraphRunner(Protocol):
    fixed_batch: bool

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run the graph on one call's worth of inputs (batch 1 when ``fixed_batch``)."""


def _interpreter_class(backend: str):
    try:
        if backend == "litert":
            from ai_edge_litert.interpreter import Interpreter
        elif backend == "tflite-runtime":
            from tflite_runtime.interpreter import Interpreter  # type: ignore[import-not-found]
        else:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
    except (ImportError, AttributeError) as exc:
        raise BackendError(f"backend {backend!r} is not importable: {exc}",
                           hint="pip install ai-edge-litert==2.3.0 (tflite-runtime 2.14 needs numpy<2)") from exc
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


def open_graph(path: Path, graph: GraphSpec, backend: str, n_threads: int = 1) -> GraphRunner:
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}", hint=f"use one of {', '.join(BACKENDS)}")
    is_onnx = graph.file.endswith(".onnx")
    if is_onnx != (backend in ONNX_BACKENDS):
        raise BackendError(f"backend {backend!r} cannot run {graph.file}",
                           hint="use onnxruntime for ONNX bundles and litert for TFLite bundles")
    if is_onnx:
        return OnnxRunner(path, graph, n_threads)
    return TFLiteRunner(path, graph, backend, n_threads)


def run_timed(runner: GraphRunner, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
    """Run and return (outputs, wall time in microseconds)."""
    t0 = time.perf_counter_ns()
    out = runner.run(inputs)
    return out, (time.perf_counter_ns() - t0) / 1e3
