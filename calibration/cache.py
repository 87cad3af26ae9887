"""Every exit's logits on the calibration data, from the bundle's own exported stages (int8 as
deployed), computed once and cached: every search after that runs on the cache, in seconds.

The cache key is the bundle's model hash and a hash of the inputs and labels, so a re-export
or other data never reads stale logits.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np

from eecompile.bundle.graphs import StageExecutor, run_all_exits
from eecompile.bundle.io import Bundle
from eecompile.core.inputs import InputSpec, Inputs, as_arrays, check_inputs, unwrap
from eecompile.errors import CalibrationError
from eecompile.util import atomic_write_bytes, cache_dir


@dataclass
class ExitLogits:
    logits: list[np.ndarray]  # per exit (N, C), dequantized, float32
    y: np.ndarray  # (N,) labels
    from_cache: bool = False

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    @property
    def preds(self) -> np.ndarray:
        """(N, K) top-1 class per exit."""
        return np.stack([lg.argmax(axis=1) for lg in self.logits], axis=1)

    @property
    def correct(self) -> np.ndarray:
        """(N, K) whether each exit's top-1 is right."""
        return self.preds == self.y[:, None]

    def take(self, idx: np.ndarray) -> "ExitLogits":
        return ExitLogits([lg[idx] for lg in self.logits], self.y[idx], self.from_cache)


def check_labelled(bundle: Bundle, x: Inputs, y: np.ndarray | None, what: str) -> tuple[Inputs, np.ndarray]:
    """(x, y) checked against the bundle's inputs and classes; x keeps its form (one array, or a
    tuple with one per model input)."""
    xs = check_inputs(x, [InputSpec.of_tensor(t) for t in bundle.manifest.input], what, error=CalibrationError)
    x = unwrap(xs)
    n = len(xs[0])
    if y is None:
        raise CalibrationError(f"{what} has no labels: calibration measures accuracy",
                               hint="give labelled data: NAME:SPLIT (e.g. fashion-mnist:val) or a .npz with x and y")
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n or not np.issubdtype(y.dtype, np.integer):
        raise CalibrationError(f"{what}: {n} inputs but labels of shape {y.shape} and dtype {y.dtype}",
                               hint="give one integer class label per input")
    n_classes = bundle.manifest.exits[-1].n_classes
    if y.min() < 0 or y.max() >= n_classes:
        raise CalibrationError(f"{what}: labels span {int(y.min())}..{int(y.max())}, the bundle has {n_classes} "
                               "classes", hint="give labels in 0..n_classes-1, in the bundle's class order")
    return x, y.astype(np.int64)


def exit_logits(bundle: Bundle, x: np.ndarray, y: np.ndarray, backend: str | None = None,
                use_cache: bool = True) -> ExitLogits:
    """Every exit's logits for (x, y), from the cache when the same bundle saw the same data."""
    h = hashlib.sha256()
    h.update(bundle.manifest.models_sha256.encode())
    for a in as_arrays(x):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(np.ascontiguousarray(y).tobytes())
    path = cache_dir() / "logits" / f"{h.hexdigest()[:24]}.npz"
    if use_cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                k = int(z["n_exits"])
                return ExitLogits([z[f"exit{i}"] for i in range(k)], z["y"], from_cache=True)
        except (OSError, KeyError, ValueError):  # a damaged cache entry: recompute it
            path.unlink(missing_ok=True)
    logits = run_all_exits(StageExecutor(bundle, backend), x)
    buf = io.BytesIO()
    np.savez(buf, n_exits=len(logits), y=y, **{f"exit{i}": lg for i, lg in enumerate(logits)})
    atomic_write_bytes(path, buf.getvalue())
    return ExitLogits(logits, y)
