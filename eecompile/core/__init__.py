"""Primitives below every pipeline stage: shared names, quantization arithmetic, exit policies."""
