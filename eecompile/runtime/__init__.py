"""Runtimes that execute a bundle stage by stage and stop early."""

from eecompile.runtime.policies import POLICIES, ExitPolicy, make_policy, simulate
from eecompile.runtime.runner import Runtime, RunResult

__all__ = ["POLICIES", "ExitPolicy", "make_policy", "simulate", "Runtime", "RunResult"]
