"""Model inputs as data: one array per model input, batch first, in the model's PyTorch layout.

A model with one input (an image, token ids) takes a batch as one array; a model with several
(token ids and an attention mask) takes a tuple of arrays, one per input, in the model's
order. Every place a batch comes in (export, validation, runtimes, calibration, profiling)
checks it here, against the inputs the model or bundle declares.

Example:
    >>> specs = [InputSpec((48,), "int64", (0, 30521)), InputSpec((48,), "int64", (0, 1))]
    >>> ids, mask = check_inputs((ids, mask), specs, "input")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import numpy as np

from eecompile.core.checks import check_batch
from eecompile.errors import DataError, EecompileError

if TYPE_CHECKING:
    from eecompile.bundle.manifest import TensorSpec

Inputs = Union[np.ndarray, tuple[np.ndarray, ...]]


@dataclass(frozen=True)
class InputSpec:
    """One model input: a sample's shape (no batch axis, PyTorch layout), its dtype and, for
    integer inputs, the valid values (inclusive)."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    value_range: tuple[int, int] | None = None

    @classmethod
    def of_tensor(cls, t: TensorSpec) -> InputSpec:
        """The model input a bundle's stage-0 graph input stands for."""
        vr = None if t.value_range is None else (int(t.value_range[0]), int(t.value_range[1]))
        return cls(tuple(int(d) for d in t.torch_shape[1:]), t.source_dtype, vr)

    def describe(self) -> str:
        rng = "" if self.value_range is None else f" in {self.value_range[0]}..{self.value_range[1]}"
        return f"{self.dtype} {self.shape}{rng}"


def as_arrays(x: Inputs) -> tuple[np.ndarray, ...]:
    """A batch as a tuple of arrays (one per input); one array is a one-input batch."""
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def n_samples(x: Inputs) -> int:
    return int(as_arrays(x)[0].shape[0])


def take(x: Inputs, idx) -> Inputs:
    """Index (or slice) every input alike; keeps the batch's structure."""
    if isinstance(x, (tuple, list)):
        return tuple(a[idx] for a in x)
    return x[idx]


def unwrap(xs: Sequence[np.ndarray]) -> Inputs:
    """The public form of a checked batch: one array for a one-input model, else a tuple."""
    return xs[0] if len(xs) == 1 else tuple(xs)


def check_inputs(x: object, specs: Sequence[InputSpec], what: str, min_samples: int = 1,
                 error: type[EecompileError] = DataError) -> tuple[np.ndarray, ...]:
    """A batch for a model that takes ``specs``: one array (one input) or a tuple/list with one
    array per input, each checked by ``check_batch``, all with the same number of samples."""
    if len(specs) > 1 and not isinstance(x, (tuple, list)):
        got = f"one {type(x).__name__}" if not isinstance(x, np.ndarray) else f"one array of shape {x.shape}"
        raise error(f"{what}: {got}, but the model takes {len(specs)} inputs "
                    f"({'; '.join(s.describe() for s in specs)})",
                    hint="pass a tuple with one array per input, in the model's order (e.g. (ids, attention_mask)); "
                         "in a .npz save them as x0, x1, ...")
    xs = as_arrays(x) if isinstance(x, (tuple, list)) else (x,)
    if len(xs) != len(specs):
        raise error(f"{what}: {len(xs)} input arrays, the model takes {len(specs)} "
                    f"({'; '.join(s.describe() for s in specs)})", hint="pass one array per model input, in order")
    out = []
    for i, (a, s) in enumerate(zip(xs, specs)):
        label = what if len(specs) == 1 else f"{what}, input {i}"
        out.append(check_batch(a, s.shape, label, min_samples, error=error, dtype=s.dtype, value_range=s.value_range))
    counts = [len(a) for a in out]
    if len(set(counts)) > 1:
        raise error(f"{what}: the inputs hold different numbers of samples ({counts})",
                    hint="give every input the same samples, in the same order")
    return tuple(out)


def npz_arrays(x: Inputs) -> dict[str, np.ndarray]:
    """How a batch is stored in a .npz: ``x`` (one input) or ``x0``, ``x1``, ... (several)."""
    xs = as_arrays(x)
    return {"x": xs[0]} if len(xs) == 1 else {f"x{i}": a for i, a in enumerate(xs)}


def npz_inputs(files: Sequence[str], get) -> Inputs | None:
    """Read a batch back from a .npz's keys (``get(key)`` returns the array); None when absent."""
    if "x" in files:
        return get("x")
    n = 0
    while f"x{n}" in files:
        n += 1
    return None if n == 0 else tuple(get(f"x{i}") for i in range(n))
