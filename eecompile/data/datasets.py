"""Datasets: Fashion-MNIST (IDX files, Debian ``dataset-fashion-mnist``), sklearn digits, .npy/.npz.

Every loader returns float32 NCHW images in [0, 1] and int64 labels. Splits are
``train`` / ``val`` / ``test``; ``val`` is a seeded hold-out carved from the training
data so that thresholds are never chosen on the test split.

A data spec is ``NAME[:SPLIT[:N]]`` (``fashion-mnist:val:1000``) or a path to a
``.npy`` (inputs only) or ``.npz`` (keys ``x`` and optionally ``y``).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eecompile.core.inputs import Inputs, n_samples, npz_inputs, take
from eecompile.errors import DataError, InternalError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat",
                   "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
SPLITS = ("train", "val", "test")
_SEED = 20261123


@dataclass
class Dataset:
    """Inputs (float32 NCHW images, or token ids; a tuple of arrays for a model with several
    inputs, see core/inputs.py) and optional int64 labels."""

    x: Inputs
    y: np.ndarray | None
    class_names: list[str]
    name: str

    def __len__(self) -> int:
        return n_samples(self.x)

    def take(self, n: int | None) -> "Dataset":
        if n is None or n >= len(self):
            return self
        y = None if self.y is None else self.y[:n]
        return Dataset(take(self.x, slice(0, n)), y, self.class_names, f"{self.name}[:{n}]")


def _read_idx(path: Path, header_bytes: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(
            f"Fashion-MNIST file {path} not found",
            hint="apt-get install -y dataset-fashion-mnist, or point eecompile --data-dir (or $EECOMPILE_FMNIST_DIR) "
                 "at a directory with the four IDX .gz files",
        ) from None
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}", hint="the file is corrupt; reinstall the dataset") from exc
    return np.frombuffer(raw, dtype=np.uint8, offset=header_bytes)


def _split_train(n: int, n_val: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(_SEED).permutation(n)
    return perm[n_val:], perm[:n_val]


def load_fashion_mnist(split: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    root = Path(data_dir) if data_dir else Path(os.environ.get("EECOMPILE_FMNIST_DIR", FASHION_MNIST_DIR))
    prefix = "t10k" if split == "test" else "train"
    images = _read_idx(root / f"{prefix}-images-idx3-ubyte.gz", 16)
    labels = _read_idx(root / f"{prefix}-labels-idx1-ubyte.gz", 8).astype(np.int64)
    if images.size != labels.size * 28 * 28:
        raise DataError(f"{root}: {images.size} pixels for {labels.size} labels",
                        hint="the IDX files are truncated or do not belong together")
    x = images.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0
    if split != "test":
        train_idx, val_idx = _split_train(len(labels), 5000)
        idx = train_idx if split == "train" else val_idx
        x, labels = x[idx], labels[idx]
    return Dataset(x, labels, list(FASHION_CLASSES), f"fashion-mnist:{split}")


def load_digits(split: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = (bunch.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    perm = np.random.default_rng(_SEED).permutation(len(y))
    parts = {"test": perm[:300], "val": perm[300:600], "train": perm[600:]}
    idx = parts[split]
    return Dataset(x[idx], y[idx], [str(i) for i in range(10)], f"digits:{split}")


def load_rotten_tomatoes(split: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    from eecompile.data.text import load_rotten_tomatoes as load

    return load(split, data_dir)


DATASETS = {"fashion-mnist": load_fashion_mnist, "digits": load_digits, "rotten-tomatoes": load_rotten_tomatoes}


@dataclass(frozen=True)
class DataSpec:
    name: str | None  # built-in dataset name, or None for a file
    split: str
    n: int | None
    path: Path | None

    def __str__(self) -> str:
        if self.path is not None:
            return str(self.path)
        return f"{self.name}:{self.split}" + (f":{self.n}" if self.n else "")


def parse_data_spec(spec: str, default_split: str = "train") -> DataSpec:
    """Parse ``NAME[:SPLIT[:N]]`` or a ``.npy``/``.npz`` path."""
    if spec.endswith((".npy", ".npz")):
        return DataSpec(None, "file", None, Path(spec))
    parts = spec.split(":")
    name = parts[0]
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}",
                        hint=f"use one of {sorted(DATASETS)}, NAME:SPLIT:N, or a .npy/.npz file")
    split = parts[1] if len(parts) > 1 and parts[1] else default_split
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} in {spec!r}", hint=f"use one of {', '.join(SPLITS)}")
    n = None
    if len(parts) > 2:
        try:
            n = int(parts[2])
        except ValueError:
            raise DataError(f"sample count {parts[2]!r} in {spec!r} is not an integer",
                            hint="write e.g. fashion-mnist:train:512") from None
        if n <= 0:
            raise DataError(f"sample count must be positive, got {n}", hint="write e.g. fashion-mnist:train:512")
    if len(parts) > 3:
        raise DataError(f"cannot parse data spec {spec!r}", hint="write NAME[:SPLIT[:N]], e.g. digits:val:200")
    return DataSpec(name, split, n, None)


_MAGIC = {".npy": b"\x93NUMPY", ".npz": b"PK\x03\x04"}


def _load_file(path: Path) -> Dataset:
    if not path.exists():
        raise DataError(f"data file {path} does not exist", hint="check the path")
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a {path.suffix} file", hint="give the path of the file itself")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}", hint="check the file's permissions") from exc
    if not head.startswith(_MAGIC[path.suffix]):
        what = "empty" if not head else f"not a {path.suffix} file (it does not start with numpy's header)"
        raise DataError(f"{path} is {what}", hint="save inputs with numpy.save (.npy) or numpy.savez (.npz, x and y)")
    try:
        obj = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        reason = "it holds Python objects (pickled), not plain arrays" if "pickle" in str(exc) else str(exc)
        raise DataError(f"cannot read {path}: {reason}", hint="save inputs with numpy.save / numpy.savez") from exc
    if isinstance(obj, np.ndarray):
        return Dataset(obj, None, [], str(path))
    with obj:
        x = npz_inputs(obj.files, obj.__getitem__)
        if x is None:
            raise DataError(f"{path} has keys {obj.files}, no 'x' (nor x0, x1, ...)",
                            hint="np.savez(path, x=inputs, y=labels); a model with several inputs: x0=ids, x1=mask, ...")
        y = obj["y"].astype(np.int64) if "y" in obj.files else None
    counts = {int(np.shape(a)[0]) if np.ndim(a) else 0 for a in (x if isinstance(x, tuple) else (x,))}
    if y is not None and counts != {len(y)}:
        raise DataError(f"{path}: {sorted(counts)} inputs but {len(y)} labels", hint="give one label per input")
    return Dataset(x, y, [], str(path))


def load_data(spec: str | DataSpec, default_split: str = "train",
              data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load a data spec (see module docstring)."""
    if isinstance(spec, str):
        spec = parse_data_spec(spec, default_split)
    if spec.path is not None:
        return _load_file(spec.path)
    if spec.name is None:
        raise InternalError("a data spec without a path has no dataset name")
    return DATASETS[spec.name](spec.split, data_dir).take(spec.n)
