"""Calibration: which exits to keep and which decision rule to use on this device under this
budget (latency, energy, accuracy), with held-out figures, a Pareto frontier, Learn-then-Test
guarantees and an anytime table, written back into the bundle and the generated C.

Installed as ``eecompile.calibrate`` (its sources live in the repository's top-level
``calibration/``); the CLI is ``eecompile calibrate``. It reads bundles and profiles and writes
bundles; nothing below it imports it.
"""

from eecompile.util import lazy_exports as _lazy_exports

_EXPORTS = {"calibrate": "eecompile.calibrate.calibrate", "CalibrateOptions": "eecompile.calibrate.calibrate",
            "Budget": "eecompile.calibrate.budget", "parse_budget": "eecompile.calibrate.budget"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)
