"""eecompile: early-exit (multi-exit) networks from PyTorch to phones and boards.

The pipeline: model contract -> per-stage export (TFLite int8/fp16/fp32, ONNX) ->
bundle (models + manifest) -> validation against PyTorch -> early-exit runtime.

Example:
    >>> import eecompile
    >>> model = eecompile.load_model("dsnet-digits")
    >>> bundle = eecompile.export(model, "tflite-int8", eecompile.load_data("digits:train:256"), "out/b")
    >>> result = eecompile.Runtime(bundle).run(eecompile.load_data("digits:test").x)

Names load on first use (PyTorch and TensorFlow are imported only by what needs them).
"""

import os as _os

from eecompile.util import lazy_exports as _lazy_exports

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_EXPORTS = {
    "Bundle": "eecompile.bundle.io", "load_bundle": "eecompile.bundle.io",
    "Dataset": "eecompile.data.datasets", "load_data": "eecompile.data.datasets",
    "EecompileError": "eecompile.errors",
    "TARGETS": "eecompile.core.names", "POLICIES": "eecompile.core.policies", "make_policy": "eecompile.core.policies",
    "ExportOptions": "eecompile.export.pipeline",
    "Tolerances": "eecompile.export.validate", "validate_bundle": "eecompile.export.validate",
    "ZOO": "eecompile.model.zoo", "EarlyExitModel": "eecompile.model.contract",
    "split_sequential": "eecompile.model.contract", "load_model": "eecompile.model.loading",
    "Runtime": "eecompile.runtime.runner", "RunResult": "eecompile.runtime.runner",
}
__all__ = sorted([*_EXPORTS, "export"])
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)

# The subpackage ``eecompile.export`` and the function ``eecompile.export`` share a name. The
# package is imported here, before anything else can, so that the import system's binding of
# the attribute happens now and the function below replaces it for good.
import eecompile.export as _export_package  # noqa: E402,F401


def export(*args, **kwargs):
    """Export a model to a validated per-stage bundle (see ``eecompile.export.pipeline.export``)."""
    from eecompile.export.pipeline import export as _export

    return _export(*args, **kwargs)
