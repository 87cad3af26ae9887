"""Turn a model spec into an ``EarlyExitModel``: a zoo name, or ``path/to/file.py:function``.

Zoo models are trained on first use and their weights cached under
``$EECOMPILE_CACHE`` (default ``~/.cache/eecompile``), keyed by a hash of the
architecture, dataset and recipe, so a changed recipe never loads stale weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from eecompile.errors import ContractError, ModelLoadError
from eecompile.model.contract import EarlyExitModel
from eecompile.model.zoo import ZOO, ZooEntry
from eecompile.util import atomic_write_bytes, atomic_write_text


def cache_dir() -> Path:
    return Path(os.environ.get("EECOMPILE_CACHE", Path.home() / ".cache" / "eecompile"))


def _weights_key(entry: ZooEntry) -> str:
    """Changes whenever the architecture code, its arguments, the data or the recipe change."""
    import inspect

    arch_src = hashlib.sha256(inspect.getsource(inspect.getmodule(entry.build)).encode()).hexdigest()
    blob = json.dumps({"name": entry.name, "arch": entry.build.__name__, "arch_src": arch_src, "kwargs": entry.kwargs,
                       "dataset": entry.dataset, "recipe": asdict(entry.recipe),
                       "torch": torch.__version__.split("+")[0]}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def zoo_weights_path(name: str) -> Path:
    entry = ZOO[name]
    return cache_dir() / "weights" / f"{name}-{_weights_key(entry)}.pt"


def load_zoo(name: str, train_if_missing: bool = True, quiet: bool = False) -> EarlyExitModel:
    """Build a zoo model with trained weights (trained and cached on first use)."""
    if name not in ZOO:
        raise ModelLoadError(f"no zoo model named {name!r}",
                             hint=f"use one of {', '.join(sorted(ZOO))}, or path/to/file.py:function")
    entry = ZOO[name]
    model = entry.make()
    path = zoo_weights_path(name)
    if path.exists():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except (RuntimeError, OSError, EOFError) as exc:
            raise ModelLoadError(f"cached weights {path} are unreadable: {exc}",
                                 hint=f"delete {path} to retrain") from exc
        model.eval()
        return model
    if not train_if_missing:
        raise ModelLoadError(f"no cached weights for {name} at {path}", hint=f"run: eecompile train {name}")
    from eecompile.data.datasets import load_data
    from eecompile.model.train import exit_accuracies, train

    train(model, load_data(f"{entry.dataset}:train"), entry.recipe, quiet=quiet)
    val_acc = exit_accuracies(model, load_data(f"{entry.dataset}:val"))
    buf = _state_bytes(model)
    atomic_write_bytes(path, buf)
    atomic_write_text(path.with_suffix(".json"), json.dumps(
        {"name": name, "val_accuracy_per_exit": val_acc, "recipe": asdict(entry.recipe)}, indent=2))
    return model


def _state_bytes(model: torch.nn.Module) -> bytes:
    import io

    b = io.BytesIO()
    torch.save(model.state_dict(), b)
    return b.getvalue()


def load_factory(spec: str) -> EarlyExitModel:
    """Import ``path/to/file.py:function`` and call the factory (it loads its own weights)."""
    file_part, _, func_name = spec.rpartition(":")
    path = Path(file_part)
    if not file_part or not func_name:
        raise ModelLoadError(f"model spec {spec!r} is neither a zoo name nor FILE.py:FUNCTION",
                             hint=f"zoo names: {', '.join(sorted(ZOO))}")
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist", hint="check the path before ':'")
    mod_name = f"eecompile_user_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"
    module_spec = importlib.util.spec_from_file_location(mod_name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[mod_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # the user's file failed to import: report it, with its own message
        raise ModelLoadError(f"importing {path} failed: {type(exc).__name__}: {exc}",
                             hint="run the file with python to see the full traceback") from exc
    factory = getattr(module, func_name, None)
    if factory is None or not callable(factory):
        raise ModelLoadError(f"{path} has no function {func_name!r}",
                             hint=f"functions there: {', '.join(n for n in dir(module) if callable(getattr(module, n)) and not n.startswith('_'))}")
    try:
        model = factory()
    except ContractError:
        raise
    except Exception as exc:  # the user's factory raised: keep its message
        raise ModelLoadError(f"{spec} raised {type(exc).__name__}: {exc}",
                             hint="the factory must build the model and load its weights without arguments") from exc
    if not isinstance(model, EarlyExitModel):
        raise ModelLoadError(f"{spec} returned {type(model).__name__}, not an EarlyExitModel",
                             hint="return eecompile.EarlyExitModel(segments=..., heads=..., input_shape=...)")
    model.eval()
    return model


def load_model(spec: str, quiet: bool = False) -> EarlyExitModel:
    """A zoo name or ``FILE.py:FUNCTION``."""
    if spec in ZOO:
        return load_zoo(spec, quiet=quiet)
    if ":" not in spec:
        raise ModelLoadError(f"{spec!r} is not a zoo model", hint=f"use one of {', '.join(sorted(ZOO))}, "
                                                                  "or path/to/file.py:function")
    return load_factory(spec)
