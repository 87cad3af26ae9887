"""A smoke test of the public API that runs in seconds: build, export to ONNX, run."""

import numpy as np
import torch
from torch import nn

import eecompile


def tiny_model():
    torch.manual_seed(0)
    segs = [nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()), nn.Sequential(nn.Conv2d(4, 8, 3, padding=1))]
    heads = [nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 3)) for c in (4, 8)]
    return eecompile.EarlyExitModel(segs, heads, input_shape=(1, 6, 6), class_names=["a", "b", "c"])


def test_tiny_onnx_roundtrip(tmp_path):
    model = tiny_model()
    x = np.random.default_rng(0).random((128, 1, 6, 6), dtype=np.float32)
    bundle = eecompile.export(model, "onnx", x, tmp_path / "b", options=eecompile.ExportOptions(quiet=True))
    assert bundle.manifest.validation["passed"]
    res = eecompile.Runtime(tmp_path / "b").run(x, policy="max-prob", thresholds=0.0)
    assert (res.exit_idx == 0).all()  # threshold 0 -> every sample leaves at the first exit
    with torch.no_grad():
        ref = model(torch.from_numpy(x))[0].argmax(1).numpy()
    np.testing.assert_array_equal(res.class_idx, ref)
