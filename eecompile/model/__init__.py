"""The multi-exit model contract, the built-in zoo, training and model loading."""

from eecompile.model.contract import EarlyExitModel, split_sequential
from eecompile.model.loading import load_model, load_zoo
from eecompile.model.zoo import ZOO

__all__ = ["EarlyExitModel", "split_sequential", "load_model", "load_zoo", "ZOO"]
