"""Training on self-generated data: the policy samples its own episodes (``trainers/`` trains on fixed data).

:mod:`~procsup.rl.advantages` turns rewards into advantages (pure functions); :mod:`~procsup.rl.grpo` is
group-relative policy gradient (GRPO, RLOO) on a history-mode LM with outcome and per-step rewards (exact
checkers or a PRM; sum-, min- and softmin-form credit, PURE); :mod:`~procsup.rl.monitor` watches a PRM for
reward gaming against the exact checker; :mod:`~procsup.rl.reinforce` is the outcome-only REINFORCE baseline
of an action head, to compare with process supervision."""
