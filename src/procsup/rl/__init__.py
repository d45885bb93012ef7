"""Training on self-generated data: the policy samples its own episodes (``trainers/`` trains on fixed data).

:mod:`~procsup.rl.advantages` turns rewards into advantages (pure functions); :mod:`~procsup.rl.reinforce`
is the outcome-only REINFORCE baseline, to compare with process supervision."""
