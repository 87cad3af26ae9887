"""The zoo: built-in model names -> architecture + dataset + training recipe.

Importing this module is cheap (no torch): ``eecompile zoo`` lists the entries and whether
their weights are cached without loading PyTorch. Architectures are named by
``"module:function"`` and imported only when a model is built.

Weights are cached under ``$EECOMPILE_CACHE/weights`` (default ``~/.cache/eecompile``),
keyed by a hash of the architecture source, its arguments, the dataset, the recipe and the
torch version, so a changed recipe never loads stale weights.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eecompile.util import cache_dir

if TYPE_CHECKING:
    from eecompile.model.contract import EarlyExitModel


@dataclass(frozen=True)
class Recipe:
    """How a zoo model is trained (see ``eecompile.model.train``)."""

    mode: str = "joint"  # "joint" weighted loss, or "two-stage" (backbone, then heads with distillation)
    epochs: int = 4
    lr: float = 3e-3
    batch_size: int = 128
    exit_weights: tuple[float, ...] = ()  # joint: one weight per exit; () means all 1.0
    distill_temperature: float = 3.0
    head_lr: float | None = None  # learning rate of the exit heads (two-stage: on the frozen backbone; None: lr)

    def key(self) -> dict[str, Any]:
        """The recipe as the weights key sees it (unset optional fields left out: adding a field
        does not retrain every cached model)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class ZooEntry:
    name: str
    build: str  # "module:function" returning an EarlyExitModel
    dataset: str
    recipe: Recipe
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def build_module(self) -> str:
        return self.build.partition(":")[0]

    def make(self) -> "EarlyExitModel":
        """The architecture with fresh (untrained) weights."""
        from eecompile.data.datasets import FASHION_CLASSES
        from eecompile.data.text import RT_CLASSES

        module, _, func = self.build.partition(":")
        names = {"fashion-mnist": FASHION_CLASSES, "rotten-tomatoes": RT_CLASSES}.get(self.dataset,
                                                                                    [str(i) for i in range(10)])
        return getattr(importlib.import_module(module), func)(class_names=names, name=self.name, **self.kwargs)


_ARCHS = "eecompile.model.archs"
ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        ZooEntry("dsnet-fmnist", f"{_ARCHS}:dsnet", "fashion-mnist",
                 Recipe(mode="joint", epochs=3, exit_weights=(0.6, 0.7, 0.85, 1.0)),
                 dict(input_shape=(1, 28, 28), widths=(24, 48, 96, 96)),
                 "depthwise-separable CNN, 4 exits, 28x28 Fashion-MNIST (the demo model)"),
        ZooEntry("dsnet-digits", f"{_ARCHS}:dsnet", "digits",
                 Recipe(mode="joint", epochs=30, lr=5e-3, batch_size=64),
                 dict(input_shape=(1, 8, 8), widths=(16, 32, 32)),
                 "depthwise-separable CNN, 3 exits, 8x8 sklearn digits (fast, for tests)"),
        ZooEntry("resnet-digits", f"{_ARCHS}:resnet", "digits",
                 Recipe(mode="two-stage", epochs=30, lr=5e-3, batch_size=64),
                 dict(input_shape=(1, 8, 8), widths=(16, 24, 32)),
                 "residual CNN, 3 exits, 8x8 sklearn digits, two-stage training with distillation"),
        ZooEntry("resnet-fmnist", f"{_ARCHS}:resnet", "fashion-mnist",
                 Recipe(mode="two-stage", epochs=4),
                 dict(input_shape=(1, 28, 28), widths=(16, 32, 64)),
                 "residual CNN, 3 exits, 28x28 Fashion-MNIST, two-stage training with distillation"),
        ZooEntry("minilm-rt", "eecompile.model.bert:minilm", "rotten-tomatoes",
                 Recipe(mode="two-stage", epochs=1, lr=5e-5, batch_size=32, head_lr=1e-3),
                 dict(length=48),
                 "pretrained MiniLM-L6 (all-MiniLM-L6-v2), an exit after each of its 6 layers, Rotten Tomatoes "
                 "sentiment; DeeBERT two-stage training (~10 min on 2 cores)"),
        ZooEntry("minilm-rt-pabee", "eecompile.model.bert:minilm", "rotten-tomatoes",
                 Recipe(mode="joint", epochs=1, lr=5e-5, batch_size=32, head_lr=1e-3,
                        exit_weights=(1.0, 2.0, 3.0, 4.0, 5.0, 6.0)),
                 dict(length=48),
                 "minilm-rt trained as PABEE does: every exit at once, loss weighted by depth (~9 min on 2 cores)"),
    ]
}


def _module_source_sha256(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return "unknown"
    return hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()


def weights_key(entry: ZooEntry) -> str:
    """Changes whenever the architecture code, its arguments, the data or the recipe change."""
    try:
        torch_version = metadata.version("torch").split("+")[0]
    except metadata.PackageNotFoundError:
        torch_version = "none"
    blob = json.dumps({"name": entry.name, "arch": entry.build, "arch_src": _module_source_sha256(entry.build_module),
                       "kwargs": entry.kwargs, "dataset": entry.dataset, "recipe": entry.recipe.key(),
                       "torch": torch_version}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def zoo_weights_path(name: str) -> Path:
    return cache_dir() / "weights" / f"{name}-{weights_key(ZOO[name])}.pt"
