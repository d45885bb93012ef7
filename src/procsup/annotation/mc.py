"""Monte Carlo step labels (Math-Shepherd: Wang et al., 2024, "Math-Shepherd: Verify and Reinforce LLMs
Step-by-step without Human Annotations", arXiv 2312.08935).

Each step's prefix is completed ``n`` times by the policy (:func:`procsup.rollout.complete`, all prefixes
of a batch of trajectories in one call; each prefix is encoded once for its ``n`` samples, its KV cache
repeated). Hard label: some completion reaches the right answer (Math-Shepherd's HE); soft label: the
fraction that do (SE). The label estimates whether the policy can still succeed after the step, a value
rather than the step's correctness (Zhang et al., 2025, "The Lessons of Developing Process Reward Models",
arXiv 2501.07301): a step after an unrecoverable error is labelled wrong even if it is right by itself,
and a right step the policy rarely completes can be labelled wrong.

``meta['annotation']``: ``method``, ``n``, ``successes`` per unit (None where the label needed no rollout,
:func:`procsup.annotation.prefixes.known`), ``rollouts`` (completions generated, counted from what
``complete`` returned) and ``policy_samples`` (steps or actions those completions generated).
"""

from __future__ import annotations

from typing import Sequence

from procsup.annotation.prefixes import known, labelled, prefix, units
from procsup.data.trajectory import Trajectory
from procsup.rollout import complete


def mc_labels(policy, trajectories: Sequence[Trajectory], n: int, seed: int, soft: bool = False) -> list[Trajectory]:
    """Every unit of every trajectory labelled from ``n`` completions of its prefix (see the module docstring).
    One :func:`complete` call, seeded by ``seed``: samples depend on the batch (its trajectories and
    ``policy.batch_size``)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    fixed = [[known(policy, t, u) for u in range(1, units(policy, t) + 1)] for t in trajectories]
    asked = [(i, u) for i, row in enumerate(fixed) for u, lab in enumerate(row, start=1) if lab is None]
    outs = complete(policy, [prefix(trajectories[i], u) for i, u in asked], n, seed=seed) if asked else []
    wins: dict[tuple[int, int], int] = {}
    spent = [[0, 0] for _ in trajectories]  # rollouts, policy samples
    for (i, u), row in zip(asked, outs):
        wins[i, u] = sum(bool(c.meta["correct"]) for c in row)
        spent[i][0] += len(row)
        spent[i][1] += sum(c.meta["samples"] for c in row)
    result = []
    for i, traj in enumerate(trajectories):
        successes = [wins.get((i, u)) for u in range(1, len(fixed[i]) + 1)]
        labels = [lab if s is None else (s / n if soft else s > 0) for lab, s in zip(fixed[i], successes)]
        if soft:
            labels = [float(lab) for lab in labels]
        note = {"method": "mc", "n": n, "successes": successes, "rollouts": spent[i][0], "policy_samples": spent[i][1]}
        result.append(labelled(policy, traj, labels, note))
    return result
