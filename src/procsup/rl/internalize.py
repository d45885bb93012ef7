"""Internalizing outcome supervision into process supervision: identify, correct and reuse failed trajectories.

Issue 16, after the perspective of seed 003 ("Internalizing Outcome Supervision into Process Supervision"),
which gives no algorithm; this is one instance of it, built from procsup's parts, that sees **only the
outcome checker** during training:

1. **Identify.** Each failed sample's first wrong step is located by the first-error search
   (:func:`procsup.annotation.first_error.first_error_labels`: binary search over prefixes, ``k``
   outcome-only completions per probed prefix; OmegaPRM, Luo et al. 2024, arXiv 2406.06592). At most
   ``max_searched`` failed samples per batch are searched (the budget); the others keep the outcome.
2. **Correct.** From the last good prefix (the steps before the located error) the policy is resampled,
   ``correct_n`` completions a round, at most ``correct_rounds`` rounds, until one reaches the right answer:
   the corrected trajectory.
3. **Reuse.** The failed sample gets per-step rewards: ``right_reward`` before the located error (credit),
   ``wrong_reward`` at it (blame) and ``after_reward`` after it; a right sample gets ``right_reward`` on every
   step. :class:`InternalizeScorer` returns them as a :data:`~procsup.scorers.StepScorer`, so that
   :func:`procsup.rl.grpo.train` takes it as its step reward unchanged (``step_reward="exact"`` names only
   that a scorer is passed; see docs/internalize.md). Corrected trajectories are kept in
   ``scorer.corrections`` for reuse as positive / PAL samples: the trainer has no input for extra samples
   yet (the change it needs is written in docs/internalize.md).

Every rollout spent on identifying and correcting is counted (``samples``: generated steps, an answer line
counting as one, as :func:`procsup.rollout.complete` counts them), so that a comparison at equal policy
samples adds them to the trainer's own count.

``rl/`` may not import ``annotation/`` or ``scorers`` (docs/architecture.md), so the search (``locate``)
and the exact checker used for *measuring* (``exact``) are passed in as plain functions.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from procsup.data.trajectory import Trajectory
from procsup.rollout import complete

Locate = Callable[..., list[Trajectory]]
"""``locate(policy, trajectories, k, seed)`` -> labelled trajectories with ``meta['annotation']`` holding
``first_error``, ``rollouts`` and ``policy_samples`` (:func:`procsup.annotation.first_error.first_error_labels`)."""
Exact = Callable[[Sequence[Trajectory]], list[list[bool]]]
"""Exact step verdicts, for measuring only (e.g. ``lambda ts: exact_labels(task, "history", ts)``)."""


@dataclass
class InternalizeConfig:
    """Budgets and reward values of the identify / correct / reuse loop."""

    k: int = 4
    """Completions per probed prefix in the first-error search (a prefix is wrong if none succeeds)."""
    max_searched: int | None = None
    """Failed samples searched per batch at most (a seeded random subset; None: all). The others keep the
    outcome as every step's reward."""
    correct_n: int = 4
    """Completions per correction round from the last good prefix."""
    correct_rounds: int = 2
    """Correction rounds at most (0: no correction)."""
    right_reward: float = 1.0
    """Step reward before the located first error, and on every step of a right sample (credit)."""
    wrong_reward: float = 0.0
    """Step reward at the located first error (blame)."""
    after_reward: float = 0.0
    """Step reward after the located first error."""
    seed: int = 0
    """Seed of the searches and corrections (each call adds its call index)."""

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.max_searched is not None and self.max_searched < 0:
            raise ValueError(f"max_searched must be >= 0 or None, got {self.max_searched}")
        if self.correct_n < 1:
            raise ValueError(f"correct_n must be >= 1, got {self.correct_n}")
        if self.correct_rounds < 0:
            raise ValueError(f"correct_rounds must be >= 0, got {self.correct_rounds}")


@dataclass
class Internalized:
    """One sample after identify and correct."""

    traj: Trajectory
    searched: bool
    """A failed sample whose first error was searched (False: right, or over the search budget)."""
    first_error: int | None
    """Located first wrong unit, 1-based (``len(steps) + 1``: the answer line); None: not searched or none found."""
    step_rewards: list[float]
    correction: Trajectory | None = None
    """The last good prefix completed to a right answer (None: not corrected within the budget)."""
    search_rollouts: int = 0
    search_samples: int = 0
    correct_rollouts: int = 0
    correct_samples: int = 0


def prefix(traj: Trajectory, u: int) -> Trajectory:
    """The trajectory's first ``u`` steps, to be continued (as :func:`procsup.annotation.prefixes.prefix`)."""
    return Trajectory(traj.input, "", traj.steps[:u], traj.meta)


def first_error_rewards(n_steps: int, first_error: int | None, right: float = 1.0, wrong: float = 0.0,
                        after: float = 0.0) -> list[float]:
    """Per-step rewards of a trajectory with ``n_steps`` written steps whose first wrong unit is
    ``first_error`` (1-based; None or ``> n_steps``, e.g. the answer line: every written step is right)."""
    if first_error is None or first_error > n_steps:
        return [right] * n_steps
    if first_error < 1:
        raise ValueError(f"first_error is 1-based, got {first_error}")
    return [right] * (first_error - 1) + [wrong] + [after] * (n_steps - first_error)


def identify(policy, trajectories: Sequence[Trajectory], locate: Locate, k: int, seed: int) -> list[Internalized]:
    """Stage 1: each trajectory's located first error (right ones cost no rollout: ``locate`` skips them)."""
    found = locate(policy, list(trajectories), k=k, seed=seed)
    out = []
    for t, lab in zip(trajectories, found):
        note = lab.meta["annotation"]
        out.append(Internalized(t, searched=not t.meta["correct"], first_error=note["first_error"], step_rewards=[],
                                search_rollouts=int(note["rollouts"]), search_samples=int(note["policy_samples"])))
    return out


def correct(policy, items: Sequence[Internalized], n: int, rounds: int, seed: int) -> None:
    """Stage 2, in place: for each searched item with a located error, resample from the last good prefix
    (``n`` completions a round, all items' prefixes in one :func:`complete` call) until one completion is
    right or ``rounds`` rounds are spent; the first right one is ``item.correction``."""
    todo = [it for it in items if it.searched and it.first_error is not None]
    for r in range(rounds):
        if not todo:
            break
        outs = complete(policy, [prefix(it.traj, it.first_error - 1) for it in todo], n, seed=seed * 1009 + r)
        for it, row in zip(todo, outs):
            it.correct_rollouts += len(row)
            it.correct_samples += sum(int(c.meta["samples"]) for c in row)
            it.correction = next((c for c in row if c.meta["correct"]), None)
        todo = [it for it in todo if it.correction is None]


def internalize(policy, trajectories: Sequence[Trajectory], cfg: InternalizeConfig, locate: Locate,
                seed: int) -> list[Internalized]:
    """Identify, correct and set step rewards (stage 3) for a batch of sampled trajectories."""
    failed = [i for i, t in enumerate(trajectories) if not t.meta["correct"]]
    if cfg.max_searched is not None and len(failed) > cfg.max_searched:
        failed = sorted(random.Random(seed).sample(failed, cfg.max_searched))
    items = [Internalized(t, False, None, []) for t in trajectories]
    for i, it in zip(failed, identify(policy, [trajectories[i] for i in failed], locate, cfg.k, seed)):
        items[i] = it
    correct(policy, items, cfg.correct_n, cfg.correct_rounds, seed)
    for it in items:
        n = len(it.traj.steps)
        if it.searched:
            it.step_rewards = first_error_rewards(n, it.first_error, cfg.right_reward, cfg.wrong_reward, cfg.after_reward)
        else:  # right, or failed and over the budget: the outcome on every step
            it.step_rewards = [cfg.right_reward if it.traj.meta["correct"] else cfg.wrong_reward] * n
    return items


def exact_first_error(verdicts: Sequence[bool], n_steps: int, is_correct: bool) -> int | None:
    """The true first wrong unit from exact verdicts (one per written step, then False per missing step):
    the first wrong written step; else, if the answer is wrong (or steps are missing), the answer line
    (``n_steps + 1``); else None."""
    for u, ok in enumerate(verdicts[:n_steps], start=1):
        if not ok:
            return u
    return None if is_correct and all(verdicts) else n_steps + 1


def measure(items: Sequence[Internalized], verdicts: Sequence[Sequence[bool]],
            correction_verdicts: Sequence[Sequence[bool]]) -> dict:
    """Located first errors and corrections against exact labels (see docs/internalize.md for each key).
    ``verdicts``: exact verdicts of each item's trajectory; ``correction_verdicts``: of each correction, in
    the order of the items that have one."""
    searched = [(it, v) for it, v in zip(items, verdicts) if it.searched]
    truth = [exact_first_error(v, len(it.traj.steps), bool(it.traj.meta["correct"])) for it, v in searched]
    located = [it.first_error for it, _ in searched]
    hits = [a == b for a, b in zip(located, truth)]
    early = [a is not None and b is not None and a < b for a, b in zip(located, truth)]
    late = [a is not None and (b is None or a > b) for a, b in zip(located, truth)]
    label_hits = []  # the search's step labels (right before the located error, wrong at it) vs exact verdicts
    for (it, v), a in zip(searched, located):
        last = len(it.traj.steps) if a is None else min(a, len(it.traj.steps))
        label_hits += [(a is None or u < a) == bool(ok) for u, ok in enumerate(v[:last], start=1)]
    corrected = [it for it in items if it.correction is not None]
    tried = [it for it in items if it.searched and it.first_error is not None]
    valid = [all(v) for v in correction_verdicts]
    n = max(len(searched), 1)
    return {
        "searched": len(searched),
        "first_error_accuracy": sum(hits) / n if searched else None,
        "first_error_early": sum(early) / n if searched else None,
        "first_error_late": sum(late) / n if searched else None,
        "first_error_none": sum(a is None for a in located) / n if searched else None,
        "step_label_accuracy": sum(label_hits) / len(label_hits) if label_hits else None,
        "corrected": len(corrected) / max(len(tried), 1) if tried else None,
        "correction_validity": sum(valid) / len(valid) if valid else None,
    }


@dataclass
class InternalizeScorer:
    """The loop as a :data:`~procsup.scorers.StepScorer` for :func:`procsup.rl.grpo.train`.

    ``policy``: an :class:`~procsup.rollout.LMPolicy` on the *same model object* that the trainer trains
    (so that searches and corrections sample the current policy). Each call (one per update) internalizes
    the batch, returns its step rewards, keeps its corrections in ``corrections`` and appends a line to
    ``history`` (and to ``log_file``): the rollouts and samples spent, and with ``exact`` set, the accuracy
    of the located first errors and corrections against exact labels (measurement only: the rewards never
    read ``exact``)."""

    policy: object
    cfg: InternalizeConfig
    locate: Locate
    exact: Exact | None = None
    log_file: str | None = None
    samples: int = 0
    """Policy samples spent on identifying and correcting, all calls."""
    rollouts: int = 0
    calls: int = 0
    corrections: list[Trajectory] = field(default_factory=list)
    """The last call's corrected trajectories."""
    history: list[dict] = field(default_factory=list)

    def __call__(self, trajectories: Sequence[Trajectory]) -> list[list[float]]:
        items = internalize(self.policy, trajectories, self.cfg, self.locate, seed=self.cfg.seed * 100_003 + self.calls)
        self.calls += 1
        search_samples = sum(it.search_samples for it in items)
        correct_samples = sum(it.correct_samples for it in items)
        rollouts = sum(it.search_rollouts + it.correct_rollouts for it in items)
        self.samples += search_samples + correct_samples
        self.rollouts += rollouts
        self.corrections = [it.correction for it in items if it.correction is not None]
        line = {"call": self.calls, "trajectories": len(items), "failed": sum(not t.meta["correct"] for t in trajectories),
                "rollouts": rollouts, "search_samples": search_samples, "correct_samples": correct_samples,
                "internalize_samples": self.samples}
        if self.exact is not None:
            verdicts = self.exact([it.traj for it in items])
            line.update(measure(items, verdicts, self.exact(self.corrections) if self.corrections else []))
        self.history.append(line)
        if self.log_file is not None:
            Path(self.log_file).parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_file, "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
        return [it.step_rewards for it in items]

