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


INT_DTYPES = ("int32", "int64")  # integer model inputs (token ids); every other input is float32


def check_batch(x: object, input_shape: tuple[int, ...], what: str, min_samples: int = 1,
                error: type[EecompileError] = DataError, dtype: str = "float32",
                value_range: tuple[int, int] | list[int] | None = None) -> np.ndarray:
    """An array of shape ``(N, *input_shape)`` with at least ``min_samples`` samples (a single
    sample without the batch axis is accepted); else ``error``. ``dtype`` is the model input's:
    float32 (float64 is cast; values must be finite) or int32/int64 (token ids: any integer
    array whose values lie in ``value_range``, inclusive, cast to ``dtype``)."""
    if not isinstance(x, np.ndarray):
        raise error(f"{what}: expected a numpy array, got {type(x).__name__}", hint="pass a numpy array")
    want = tuple(int(d) for d in input_shape)
    if x.ndim == len(want) and tuple(x.shape) == want:
        x = x[None]
    if x.ndim == 0 or tuple(x.shape[1:]) != want:
        raise error(f"{what}: shape {tuple(x.shape)} does not match the model input (N, {', '.join(map(str, want))})",
                    hint=shape_hint(tuple(x.shape[1:]) if x.ndim else (), want))
    if dtype in INT_DTYPES:
        x = _check_ids(x, what, dtype, value_range, error)
    elif x.dtype != np.float32:
        if x.dtype != np.float64:
            hint = ("scale integer images to float32 in the model's input range, e.g. x.astype(np.float32) / 255"
                    if np.issubdtype(x.dtype, np.integer) else "give float32 inputs")
            raise error(f"{what}: dtype {x.dtype}, expected float32", hint=hint)
        x = x.astype(np.float32)
    if x.shape[0] == 0:
        raise error(f"{what}: the batch is empty (no samples)", hint=f"give at least {max(1, min_samples)} sample(s)")
    if dtype not in INT_DTYPES and not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=tuple(range(1, x.ndim))).sum())
        raise error(f"{what}: {bad} sample(s) contain NaN or inf", hint="clean or drop those samples")
    if x.shape[0] < min_samples:
        raise error(f"{what}: {x.shape[0]} samples, at least {min_samples} needed",
                    hint=f"give at least {min_samples} representative samples")
    return x


def _check_ids(x: np.ndarray, what: str, dtype: str, value_range, error: type[EecompileError]) -> np.ndarray:
    """Integer inputs (token ids): an integer array, every value in ``value_range``."""
    if not np.issubdtype(x.dtype, np.integer):
        raise error(f"{what}: dtype {x.dtype}, expected integers ({dtype}): this model takes token ids",
                    hint="tokenize the text with the model's tokenizer; pass the ids as an integer array, "
                         "e.g. np.asarray(ids, dtype=np.int64)")
    info = np.iinfo(dtype)
    lo, hi = (int(v) for v in value_range) if value_range is not None else (int(info.min), int(info.max))
    if x.size:
        bad = (x < lo) | (x > hi)
        if bad.any():
            n_bad = int(bad.any(axis=tuple(range(1, x.ndim))).sum())
            first = int(x[bad][0])
            raise error(f"{what}: {n_bad} sample(s) hold ids outside {lo}..{hi} (e.g. {first})",
                        hint="ids index the model's vocabulary (its embedding table): tokenize with the model's "
                             "own tokenizer, or map unknown tokens to its [UNK] id")
    return x.astype(dtype)
