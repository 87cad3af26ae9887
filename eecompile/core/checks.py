"""Checks of a batch of model inputs, shared by data loading (export, validation) and the
runtimes: one place decides what a bad input is and what to tell the user."""

from __future__ import annotations

import numpy as np

from eecompile.errors import DataError, EecompileError


def shape_hint(got: tuple[int, ...], want: tuple[int, ...]) -> str:
    """What to do about a wrong sample shape: a transpose only when the sizes are a permutation."""
    if sorted(got) == sorted(want) and got != want:
        return ("the sizes match in another order: inputs use the PyTorch model's layout (NCHW for images); "
                "transpose NHWC data with x.transpose(0, 3, 1, 2)")
    return f"each sample must have shape {tuple(want)}, the model's input_shape"


def check_batch(x: object, input_shape: tuple[int, ...], what: str, min_samples: int = 1,
                error: type[EecompileError] = DataError) -> np.ndarray:
    """A float32 array of shape ``(N, *input_shape)``, finite, with at least ``min_samples``
    samples (a single sample without the batch axis is accepted); else ``error``."""
    if not isinstance(x, np.ndarray):
        raise error(f"{what}: expected a numpy array, got {type(x).__name__}", hint="pass a numpy array")
    want = tuple(int(d) for d in input_shape)
    if x.ndim == len(want) and tuple(x.shape) == want:
        x = x[None]
    if x.ndim == 0 or tuple(x.shape[1:]) != want:
        raise error(f"{what}: shape {tuple(x.shape)} does not match the model input (N, {', '.join(map(str, want))})",
                    hint=shape_hint(tuple(x.shape[1:]) if x.ndim else (), want))
    if x.dtype != np.float32:
        if x.dtype != np.float64:
            raise error(f"{what}: dtype {x.dtype}, expected float32",
                        hint="scale integer images to float32 in the model's input range, "
                             "e.g. x.astype(np.float32) / 255")
        x = x.astype(np.float32)
    if x.shape[0] == 0:
        raise error(f"{what}: the batch is empty (no samples)", hint=f"give at least {max(1, min_samples)} sample(s)")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=tuple(range(1, x.ndim))).sum())
        raise error(f"{what}: {bad} sample(s) contain NaN or inf", hint="clean or drop those samples")
    if x.shape[0] < min_samples:
        raise error(f"{what}: {x.shape[0]} samples, at least {min_samples} needed",
                    hint=f"give at least {min_samples} representative samples")
    return x
