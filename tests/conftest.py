"""Shared fixtures. Zoo weights are trained for real into a per-session cache (dsnet-digits:
~15 s on 2 cores), and the bundles the tests share are exported once per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def require_tools(*tools: str) -> None:
    """Skip a test whose tools are missing -- except in CI (``CI`` set), where .ci/run installs
    every tool (scripts/setup.sh) and a missing one is a failure, not a silent skip."""
    missing = [t for t in tools if shutil.which(t) is None]
    if not missing:
        return
    msg = f"needs {', '.join(missing)} (scripts/setup.sh installs them)"
    if os.environ.get("CI"):
        pytest.fail(f"CI: {msg}")
    pytest.skip(msg)


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("eecompile-cache")
    old = os.environ.get("EECOMPILE_CACHE")
    os.environ["EECOMPILE_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("EECOMPILE_CACHE", None)
    else:
        os.environ["EECOMPILE_CACHE"] = old


@pytest.fixture(scope="session")
def digits_model():
    from eecompile.model.loading import load_zoo

    return load_zoo("dsnet-digits", quiet=True)


@pytest.fixture(scope="session")
def digits_data():
    from eecompile.data import load_data

    return {"train": load_data("digits:train:256"), "val": load_data("digits:val"), "test": load_data("digits:test")}


def _export(model, target, data, out: Path, **opts):
    from eecompile.export import ExportOptions, export

    return export(model, target, data["train"], out, val_data=data["val"],
                  options=ExportOptions(quiet=True, model_source=getattr(model, "name", ""), **opts))


@pytest.fixture(scope="session")
def int8_bundle(digits_model, digits_data, tmp_path_factory):
    return _export(digits_model, "tflite-int8", digits_data, tmp_path_factory.mktemp("b") / "int8")


@pytest.fixture(scope="session")
def onnx_bundle(digits_model, digits_data, tmp_path_factory):
    return _export(digits_model, "onnx", digits_data, tmp_path_factory.mktemp("b") / "onnx")


@pytest.fixture
def export_digits(digits_model, digits_data):
    """Export the digits model to a new bundle: export_digits(target, out, **options)."""
    return lambda target, out, **opts: _export(digits_model, target, digits_data, out, **opts)


@pytest.fixture(scope="session")
def resnet_bundle(digits_data, tmp_path_factory):
    """A second architecture (residual blocks, two-stage training) for harness parity."""
    from eecompile.model.loading import load_zoo

    model = load_zoo("resnet-digits", quiet=True)
    return _export(model, "tflite-int8", digits_data, tmp_path_factory.mktemp("r") / "resnet")


@pytest.fixture(scope="session")
def split_bundle(digits_model, digits_data, tmp_path_factory):
    """Split heads, calibrated without range anchors (boundary grids close, not forced equal)."""
    return _export(digits_model, "tflite-int8", digits_data, tmp_path_factory.mktemp("s") / "split", split_heads=True,
                   range_anchors=False)


@pytest.fixture(scope="session")
def requant_bundle(digits_data, tmp_path_factory):
    """Residual CNN with split heads, calibrated without range anchors: its boundaries (the
    unbounded ReLU states) really need requantization, as the manifest's boundary rows show."""
    from eecompile.model.loading import load_zoo

    from eecompile.data.datasets import Dataset

    model = load_zoo("resnet-digits", quiet=True)
    train = digits_data["train"]
    # Whether a grid moves by half a level is a matter of chance: the consumer calibrates on the
    # producer's int8 outputs, whose maximum usually saturates at the top level, and then both
    # grids coincide (measured: no boundary needed it for some trainings of this model, with
    # three calibration sets each). Try calibration sets of other sizes and samples; None when
    # none of them gives a boundary that needs requantization.
    rng = np.random.default_rng(0)
    variants = [np.arange(n) for n in (256, 224, 192)] + [rng.permutation(len(train))[:n] for n in (160, 128, 96)]
    for i, idx in enumerate(variants):
        data = dict(digits_data, train=Dataset(train.x[idx], train.y[idx], train.class_names, f"{train.name}[v{i}]"))
        b = _export(model, "tflite-int8", data, tmp_path_factory.mktemp("rq") / f"requant{i}", split_heads=True,
                    range_anchors=False)
        if any(r["requantize"] for r in b.manifest.boundaries):
            return b
    return None
