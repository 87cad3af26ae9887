"""The baseline the per-stage C harness is measured against: the same network as ONE TFLite
model (backbone + every exit head as outputs), calibrated on the model input. Used only by
the benchmarks, so it lives here and not in the package."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from eecompile.core.names import TARGETS
from eecompile.core.inputs import check_inputs
from eecompile.errors import EecompileError
from eecompile.export.onnx import export_onnx
from eecompile.model.contract import EarlyExitModel


class _AllExits(torch.nn.Module):
    """The whole network as one graph: input -> every exit's logits (for overhead baselines)."""

    def __init__(self, model: EarlyExitModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs):
        return tuple(self.model(*inputs))


def export_monolithic(model: EarlyExitModel, target: str, calib: np.ndarray, out_file: str | os.PathLike,
                      onnxsim: str = "auto") -> Path:
    """One TFLite model of the same graph as a bundle (backbone + every head as outputs),
    calibrated on the model input: the baseline the per-stage harness is measured against."""
    precision = TARGETS[target]
    if precision == "onnx":
        raise EecompileError("the monolithic baseline is a TFLite model", hint="use a tflite-* target")
    from eecompile.export.tflite import convert_stage

    if len(model.input_specs) != 1:
        raise EecompileError("the monolithic baseline takes one model input", hint="use a one-input model")
    x = check_inputs(calib, model.input_specs, "calibration data", min_samples=4)[0]
    module = _AllExits(model).eval()
    example = (torch.from_numpy(x[:1]),)
    work = Path(tempfile.mkdtemp(prefix="eecompile-mono-"))
    try:
        names = [f"logits_{i}" for i in range(model.n_stages)]
        onnx_path = work / "mono.onnx"
        export_onnx(module, example, ["input_0"], names, onnx_path, dynamic_batch=False, stage_idx=-1,
                    output_shapes=[[1, model.n_classes]] * model.n_stages)
        torch_out = [(n, "logits", [1, model.n_classes]) for n in names]
        g = convert_stage(onnx_path, work, precision, -1, [("input_0", "input", list(example[0].shape))], torch_out,
                          [x], [x[:4]], onnxsim)
        out = Path(out_file)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(g.data)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)
