"""Bundles: stage model files + a versioned manifest, written atomically, loaded with checks."""

from eecompile.bundle.io import Bundle, load_bundle
from eecompile.bundle.manifest import SCHEMA_VERSION, ExitSpec, GraphSpec, Manifest, QuantParams, StageSpec, TensorSpec

__all__ = ["Bundle", "load_bundle", "SCHEMA_VERSION", "ExitSpec", "GraphSpec", "Manifest", "QuantParams",
           "StageSpec", "TensorSpec"]
