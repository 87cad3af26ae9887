"""The Python early-exit runtime: run a bundle stage by stage and stop at the first confident exit."""

from eecompile.core.policies import POLICIES, ExitPolicy, make_policy, simulate
from eecompile.runtime.runner import Runtime, RunResult

__all__ = ["POLICIES", "ExitPolicy", "make_policy", "simulate", "Runtime", "RunResult"]
