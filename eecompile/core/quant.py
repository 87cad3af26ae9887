"""Quantization arithmetic shared by the export, the runtimes and the generated C.

Rounding is half away from zero everywhere (TFLite's ``TfLiteRound`` and C's
``roundf``), so the Python runtime and the C harness produce the same int8 values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the manifest's types; core stays below the bundle layer
    from eecompile.bundle.manifest import QuantParams, TensorSpec

_LIMITS = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


def round_half_away(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def quantize(x: np.ndarray, q: QuantParams, dtype: str) -> np.ndarray:
    lo, hi = _LIMITS[dtype]
    v = round_half_away(x.astype(np.float32) / np.float32(q.scale)) + q.zero_point
    return np.clip(v, lo, hi).astype(dtype)


def dequantize(x: np.ndarray, q: QuantParams | None) -> np.ndarray:
    if q is None:
        return x.astype(np.float32)
    return (x.astype(np.float32) - np.float32(q.zero_point)) * np.float32(q.scale)


def requantize(x: np.ndarray, src: QuantParams, dst: QuantParams, dtype: str) -> np.ndarray:
    """``q2 = clip(round((q1 - z1) * s1 / s2) + z2)``: move int values from one quant grid to another."""
    lo, hi = _LIMITS[dtype]
    ratio = np.float32(src.scale) / np.float32(dst.scale)
    v = round_half_away((x.astype(np.float32) - np.float32(src.zero_point)) * ratio) + dst.zero_point
    return np.clip(v, lo, hi).astype(dtype)


def needs_requant(src: QuantParams, dst: QuantParams, n_levels: int = 256) -> bool:
    """False when requantizing is the identity: same zero point and the scales' ratio
    moves no code by half a level (``n_levels * |s1/s2 - 1| < 0.5``)."""
    return src.zero_point != dst.zero_point or (n_levels - 1) * abs(src.scale / dst.scale - 1.0) >= 0.5


def to_graph_input(x_torch_layout: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """A float array in PyTorch layout -> the graph input's layout and dtype."""
    x = np.ascontiguousarray(np.transpose(x_torch_layout, spec.perm_from_torch))
    if spec.quant is not None:
        return quantize(x, spec.quant, spec.dtype)
    return x.astype(spec.dtype)


def to_torch_layout(x_graph_layout: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """A dequantized graph array -> PyTorch layout (for comparing with the reference)."""
    inv = np.argsort(spec.perm_from_torch)
    return np.transpose(dequantize(x_graph_layout, spec.quant), inv)
