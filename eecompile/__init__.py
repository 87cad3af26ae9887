"""eecompile: early-exit (multi-exit) networks from PyTorch to phones and boards.

The pipeline: model contract -> per-stage export (TFLite int8/fp16/fp32, ONNX) ->
bundle (models + manifest) -> validation against PyTorch -> early-exit runtime.

Example:
    >>> import eecompile
    >>> model = eecompile.load_model("dsnet-digits")
    >>> bundle = eecompile.export(model, "tflite-int8", eecompile.load_data("digits:train:256"), "out/b")
    >>> result = eecompile.Runtime(bundle).run(eecompile.load_data("digits:test").x)
"""

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from eecompile.bundle import Bundle, load_bundle  # noqa: E402
from eecompile.data import Dataset, load_data  # noqa: E402
from eecompile.errors import EecompileError  # noqa: E402
from eecompile.export import TARGETS, ExportOptions, Tolerances, export, validate_bundle  # noqa: E402
from eecompile.model import ZOO, EarlyExitModel, load_model, split_sequential  # noqa: E402
from eecompile.runtime import POLICIES, Runtime, RunResult, make_policy  # noqa: E402

__all__ = ["Bundle", "load_bundle", "Dataset", "load_data", "EecompileError", "TARGETS", "ExportOptions",
           "Tolerances", "export", "validate_bundle", "ZOO", "EarlyExitModel", "load_model", "split_sequential",
           "POLICIES", "Runtime", "RunResult", "make_policy"]
