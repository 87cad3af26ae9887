"""The C harness: generate per-bundle C constants, build the harness (host or aarch64)."""

from eecompile.harness.build import BuildResult, build_harness, find_litert_lib
from eecompile.harness.generate import generate_harness

__all__ = ["BuildResult", "build_harness", "find_litert_lib", "generate_harness"]
