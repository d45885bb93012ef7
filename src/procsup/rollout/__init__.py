"""Where a policy turns problems or partial trajectories into trajectories: the one sampler.

:func:`complete` (both modes, every caller), :func:`start` (empty prefixes), the policies
(:class:`LMPolicy`, :class:`ActionHeadPolicy`) and the token-level :func:`generate` behind them.
"""

from procsup.rollout.complete import complete, history_budget, start, step_budget
from procsup.rollout.generate import generate, seeded
from procsup.rollout.policy import ActionHeadPolicy, LMPolicy, load_policy

__all__ = ["ActionHeadPolicy", "LMPolicy", "complete", "generate", "history_budget", "load_policy", "seeded", "start",
           "step_budget"]
