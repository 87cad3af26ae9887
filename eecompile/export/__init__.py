"""Export: one subgraph per stage (backbone segment + exit head), per target, validated."""

from eecompile.util import lazy_exports as _lazy_exports

_EXPORTS = {"TARGETS": "eecompile.core.names", "ExportOptions": "eecompile.export.pipeline",
            "export": "eecompile.export.pipeline", "Tolerances": "eecompile.export.validate",
            "ValidationReport": "eecompile.export.validate", "validate_bundle": "eecompile.export.validate"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)
