"""Typed errors. The library raises these; only ``cli.py`` turns them into messages.

Every user-facing error carries a ``hint``: the next step to take. ``InternalError``
marks a broken invariant inside eecompile and asks for a bug report.
"""

from __future__ import annotations


class EecompileError(Exception):
    """Base class of every error that eecompile raises on bad input or a failed check."""

    def __init__(self, message: str, hint: str = "") -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message}" + (f" (hint: {hint})" if hint else ""))


class ModelLoadError(EecompileError):
    """A model spec (``file.py:function`` or zoo name) could not be turned into a model."""


class ContractError(EecompileError):
    """The multi-exit model breaks the contract (shapes do not flow, heads disagree...)."""

    def __init__(self, message: str, hint: str = "", stage_idx: int | None = None) -> None:
        self.stage_idx = stage_idx
        where = f"stage {stage_idx}: " if stage_idx is not None else ""
        super().__init__(where + message, hint)


class DataError(EecompileError):
    """Calibration / validation data is missing, of the wrong shape or dtype, or too small."""


class UnsupportedOpError(EecompileError):
    """A stage uses an op that the chosen target cannot express with builtin kernels."""


class ExportError(EecompileError):
    """A converter failed for a reason other than an unsupported op."""


class ToleranceError(EecompileError):
    """Validation found exported exits that disagree with the PyTorch reference.

    ``failures`` lists every failing check, not just the first.
    """

    def __init__(self, failures: list["CheckFailure"], hint: str = "") -> None:
        self.failures = failures
        lines = "; ".join(str(f) for f in failures)
        super().__init__(f"{len(failures)} validation check(s) failed: {lines}", hint)


class CheckFailure:
    """One failed validation check: which exit, which metric, measured value, tolerance."""

    def __init__(self, exit_idx: int, metric: str, value: float, tolerance: float, op: str) -> None:
        self.exit_idx = exit_idx
        self.metric = metric
        self.value = value
        self.tolerance = tolerance
        self.op = op

    def __str__(self) -> str:
        return f"exit {self.exit_idx} {self.metric}: {self.value:.4g} not {self.op} {self.tolerance:.4g}"

    def to_dict(self) -> dict:
        return {"exit_idx": self.exit_idx, "metric": self.metric, "value": self.value,
                "tolerance": self.tolerance, "op": self.op}


class BundleError(EecompileError):
    """A bundle directory is missing, incomplete or malformed."""


class ChecksumError(BundleError):
    """A file in a bundle does not match the sha256 recorded in its manifest."""


class SchemaVersionError(BundleError):
    """The manifest was written by an incompatible eecompile schema version."""


class OutputPathError(EecompileError):
    """The output location exists (without ``force``) or cannot be written."""


class InputError(EecompileError):
    """A runtime input has the wrong shape or dtype, or holds NaN/inf."""


class PolicyError(EecompileError):
    """An exit policy name, threshold or ``max_exit`` is invalid."""


class TrainingError(EecompileError):
    """A training recipe cannot be applied to the model or data."""


class HarnessError(EecompileError):
    """A bundle cannot become a C harness (its target, dtypes or shapes are not supported)."""


class DeviceError(EecompileError):
    """A device to profile is missing, unreachable, unauthorized, or went away."""


class ProfileError(EecompileError):
    """A profile cannot be made or used: bad settings, a runner that fails on the device, or a
    profile that belongs to another bundle."""


class CalibrationError(EecompileError):
    """A calibration cannot be done as asked: a bad budget, data, exits or guarantee setting."""


class InfeasibleBudgetError(CalibrationError):
    """No rule meets the budget; the message names the nearest feasible point."""


class ToolError(EecompileError):
    """An external tool (cmake, a compiler, qemu, adb, ssh) is missing or failed."""


class BackendError(EecompileError):
    """A runtime backend (LiteRT, tflite-runtime, ONNX Runtime) is missing or failed."""


class InternalError(Exception):
    """An invariant inside eecompile broke: this is a bug, please report it.

    Not an ``EecompileError``: no input of the user's can fix it, so the CLI prints it
    with a request for a bug report instead of a hint."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(f"internal error: {message} -- this is a bug in eecompile, please report it "
                         "(https://github.com/eecompile/eecompile/issues) with the command you ran")
