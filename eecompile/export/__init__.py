"""Export: one subgraph per stage (backbone segment + exit head), per target, validated."""

from eecompile.export.pipeline import TARGETS, ExportOptions, export
from eecompile.export.validate import Tolerances, ValidationReport, validate_bundle

__all__ = ["TARGETS", "ExportOptions", "export", "Tolerances", "ValidationReport", "validate_bundle"]
