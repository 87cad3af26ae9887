"""The multi-exit model contract, the built-in zoo, training and model loading."""

from eecompile.util import lazy_exports as _lazy_exports

_EXPORTS = {"EarlyExitModel": "eecompile.model.contract", "split_sequential": "eecompile.model.contract",
            "load_model": "eecompile.model.loading", "load_zoo": "eecompile.model.loading",
            "ZOO": "eecompile.model.zoo"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)
