"""Turn a model spec into an ``EarlyExitModel``: a zoo name, or ``path/to/file.py:function``.

Zoo models are trained on first use and their weights cached (see ``eecompile.model.zoo``).
``expect`` lets a caller check the architecture (exits, shapes) *before* weights are
trained or loaded: a wrong ``--model`` fails in a second, not after minutes of training.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from eecompile.errors import ContractError, ModelLoadError
from eecompile.model.contract import EarlyExitModel
from eecompile.model.zoo import ZOO, zoo_weights_path
from eecompile.util import atomic_write_bytes, atomic_write_text

Expect = Callable[[EarlyExitModel], None]


def load_zoo(name: str, train_if_missing: bool = True, quiet: bool = False,
             expect: Expect | None = None) -> EarlyExitModel:
    """Build a zoo model with trained weights (trained and cached on first use)."""
    if name not in ZOO:
        raise ModelLoadError(f"no zoo model named {name!r}",
                             hint=f"use one of {', '.join(sorted(ZOO))}, or path/to/file.py:function")
    entry = ZOO[name]
    model = entry.make()
    if expect is not None:
        expect(model)
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


def split_factory_spec(spec: str) -> tuple[Path, str]:
    """``path/to/file.py:function`` -> (path, function), or a ModelLoadError saying what is wrong."""
    file_part, _, func_name = spec.rpartition(":")
    path = Path(file_part)
    if not file_part or not func_name:
        raise ModelLoadError(f"model spec {spec!r} is neither a zoo name nor FILE.py:FUNCTION",
                             hint=f"zoo names: {', '.join(sorted(ZOO))}")
    if path.suffix != ".py":
        raise ModelLoadError(f"model file {path} is not a Python file (.py)",
                             hint="write the model spec as path/to/file.py:function")
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist (looked in {Path.cwd()})",
                             hint="check the path before ':'; a bundle records the absolute path it was exported from")
    return path, func_name


def canonical_source(spec: str) -> str:
    """What a bundle records as its model source: a zoo name as is, a factory with its
    absolute path, so ``eecompile validate`` works from any directory."""
    if spec in ZOO:
        return spec
    _check_spec_form(spec)
    path, func = split_factory_spec(spec)
    return f"{path.resolve()}:{func}"


def load_factory(spec: str, expect: Expect | None = None) -> EarlyExitModel:
    """Import ``path/to/file.py:function`` and call the factory (it loads its own weights)."""
    path, func_name = split_factory_spec(spec)
    mod_name = f"eecompile_user_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"
    module_spec = importlib.util.spec_from_file_location(mod_name, path)
    if module_spec is None or module_spec.loader is None:
        raise ModelLoadError(f"{path} cannot be imported as a Python module",
                             hint="write the model spec as path/to/file.py:function")
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
    if expect is not None:
        expect(model)
    model.eval()
    return model


def load_model(spec: str, quiet: bool = False, expect: Expect | None = None) -> EarlyExitModel:
    """A zoo name or ``FILE.py:FUNCTION``. ``expect(model)`` runs on the architecture before
    any weights are trained (zoo) or the model is used."""
    if spec in ZOO:
        return load_zoo(spec, quiet=quiet, expect=expect)
    _check_spec_form(spec)
    return load_factory(spec, expect=expect)


def _check_spec_form(spec: str) -> None:
    if ":" not in spec:
        raise ModelLoadError(f"{spec!r} is not a zoo model", hint=f"use one of {', '.join(sorted(ZOO))}, "
                                                                  "or path/to/file.py:function")
