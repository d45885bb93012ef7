"""First-error search: binary search over prefixes with rollouts reused (OmegaPRM: Luo et al., 2024,
"Improve Mathematical Reasoning in Language Models by Automated Process Supervision", arXiv 2406.06592).

Let ``ok(u)`` be "some completion of the prefix that ends with unit u reaches the right answer" (units:
:mod:`procsup.annotation.prefixes`). The **first error** of a trajectory is the smallest u with
``ok(u)`` false, found by binary search under the assumption that ``ok`` is monotone along the trace
(once no completion succeeds, none succeeds later), with ``ok(0)`` (the bare problem) taken as true:

* the trajectory's own final answer is right (its last prefix is decided without rollouts,
  :func:`~procsup.annotation.prefixes.known`): the trajectory is itself a successful completion of every
  one of its prefixes, so there is **no first error**, every unit is labelled right, and no rollout is
  spent;
* its answer is wrong: the search runs between 0 (right) and the last unit (wrong); every probed prefix
  that succeeds may also mean the first error is the last unit (the answer line in history mode, the last
  action in state mode);
* no answer known (a cut trace, a file without answers): the last unit is probed like the others, and
  if every probe succeeds there is no first error.

Labels: right before the first error, wrong at it, unlabelled (None) after it.

A probe of prefix u needs ``k`` completions (wrong if none succeeds); completions already drawn are
reused, without bias: a completion of an earlier prefix that *passes through* prefix u (its first u
steps are the trajectory's) is, from there on, a sample of the policy continuing prefix u. A successful
completion proves ``ok`` for every prefix it passes through, so the search's lower end jumps to the
last step it shares with the trajectory. Only the missing completions are generated.

``meta['annotation']``: ``method``, ``k``, ``first_error`` (1-based unit, or None), ``probes``
(``[u, successes, completions seen, completions generated]`` per probe in search order),
``rollouts`` (completions generated, counted from what ``complete`` returned) and ``policy_samples``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from procsup.annotation.prefixes import common_steps, known, labelled, passes_through, prefix, units
from procsup.data.trajectory import Trajectory
from procsup.rollout import complete


@dataclass
class _Search:
    traj: Trajectory
    lo: int
    hi: int
    """ok(lo) is true, ok(hi) false (hi = units + 1: not known to fail anywhere)."""
    units: int
    done: bool = False
    pool: list[tuple[int, Trajectory]] = field(default_factory=list)
    """(prefix it was drawn from, completion)."""
    probes: list[list[int]] = field(default_factory=list)
    rollouts: int = 0
    samples: int = 0

    @property
    def mid(self) -> int:
        return (self.lo + self.hi) // 2

    def seen(self, u: int) -> list[Trajectory]:
        """Samples of the policy continuing prefix u: drawn from prefix u or an earlier one, through u."""
        return [c for j, c in self.pool if j <= u and passes_through(c, self.traj, u)]

    def proven(self, u: int) -> list[Trajectory]:
        """Successful completions through u, drawn from any prefix: each proves ok(u)."""
        return [c for _, c in self.pool if c.meta["correct"] and passes_through(c, self.traj, u)]

    def decide(self, u: int, ok: bool) -> None:
        if ok:  # every successful completion through u proves the steps it shares with the trajectory
            reach = max([u, *(common_steps(c, self.traj) for c in self.proven(u))])
            self.lo = min(reach, self.hi - 1)
        else:
            self.hi = u
        self.done = self.hi - self.lo <= 1


def _seed(seed: int, round_: int, need: int) -> int:
    return (seed * 1_000_003 + round_ * 1009 + need) % 2**63


def first_error_labels(policy, trajectories: Sequence[Trajectory], k: int, seed: int) -> list[Trajectory]:
    """Each trajectory's first error found by binary search with ``k`` completions per probed prefix
    (see the module docstring). The searches of all trajectories advance together, one probe each per
    round; a round's prefixes that need the same number of new completions share one :func:`complete`
    call, seeded from ``seed``, the round and that number."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    searches = []
    for traj in trajectories:
        m = units(policy, traj)
        last = known(policy, traj, m) if m else True
        s = _Search(traj, 0, m if last is False else m + 1, m)
        s.done = last is True or m == 0 or s.hi - s.lo <= 1
        searches.append(s)
    round_ = 0
    while live := [s for s in searches if not s.done]:
        asks: dict[int, list[_Search]] = {}
        for s in live:
            u = s.mid
            lab = known(policy, s.traj, u)
            seen = s.seen(u)
            wins = len(s.proven(u))
            if lab is not None or wins or len(seen) >= k:
                s.probes.append([u, wins, len(seen), 0])
                s.decide(u, bool(lab) if lab is not None else wins > 0)
            else:
                asks.setdefault(k - len(seen), []).append(s)
        for need, group in sorted(asks.items()):
            outs = complete(policy, [prefix(s.traj, s.mid) for s in group], need, seed=_seed(seed, round_, need))
            for s, row in zip(group, outs):
                u = s.mid
                s.pool.extend((u, c) for c in row)
                s.rollouts += len(row)
                s.samples += sum(c.meta["samples"] for c in row)
                seen = s.seen(u)
                wins = len(s.proven(u))
                s.probes.append([u, wins, len(seen), len(row)])
                s.decide(u, wins > 0)
        round_ += 1
    out = []
    for s in searches:
        first = s.hi if s.hi <= s.units else None
        labels = [True if u < (first or s.units + 1) else False if u == first else None for u in range(1, s.units + 1)]
        note = {"method": "first-error", "k": k, "first_error": first, "probes": s.probes, "rollouts": s.rollouts,
                "policy_samples": s.samples}
        out.append(labelled(policy, s.traj, labels, note))
    return out
