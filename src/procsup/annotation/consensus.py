"""Consensus filtering: keep a step label only where two annotators agree (Zhang et al., 2025, "The
Lessons of Developing Process Reward Models in Mathematical Reasoning", arXiv 2501.07301, which keeps
the samples on which Monte Carlo estimation and an LLM judge agree).

The two sources label the same trajectories (same input and actions, in the same order): e.g. MC labels
from two policies, MC and first-error, or MC and a PRM's scores. Labels are compared as hard labels: a
bool as it is, a float (a soft MC label, a PRM score) as ``label > threshold``.

* ``agree="step"``: each step keeps its label (as a bool) where both sources labelled it and agree;
  elsewhere it becomes unlabelled (None);
* ``agree="trajectory"``: a trajectory keeps all of the first source's labels (as bools) if both sources
  put the first error (first step labelled wrong, or none) at the same place; otherwise it loses every label.

:func:`consensus` also returns what was dropped (:class:`ConsensusReport`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Sequence

from procsup.data.trajectory import Label, Trajectory


@dataclass
class ConsensusReport:
    trajectories: int = 0
    trajectories_kept: int = 0
    """Trajectories left with at least one label."""
    steps: int = 0
    labelled_both: int = 0
    """Steps that both sources labelled."""
    kept: int = 0
    """Steps whose label was kept."""
    dropped_disagree: int = 0
    """Labels of the first source dropped for a disagreement: a different hard label (by step), a
    different first error (by trajectory)."""
    dropped_missing: int = 0
    """By step: steps one source or both left unlabelled."""

    def as_dict(self) -> dict:
        return {**asdict(self), "share_kept": self.kept / self.steps if self.steps else None}


def hard(label: Label | None, threshold: float = 0.5) -> bool | None:
    """A label as a bool: a bool as is, a float as ``label > threshold``, None stays None."""
    if label is None or isinstance(label, bool):
        return label
    return label > threshold


def first_wrong(labels: Sequence[bool | None]) -> int | None:
    """1-based index of the first step labelled wrong, or None."""
    return next((t for t, lab in enumerate(labels, start=1) if lab is False), None)


def consensus(a: Sequence[Trajectory], b: Sequence[Trajectory], agree: str = "step", threshold: float = 0.5
              ) -> tuple[list[Trajectory], ConsensusReport]:
    """``a``'s trajectories with only the labels both sources agree on (see the module docstring), and a report;
    ``meta['consensus']`` of each holds its kept and dropped counts."""
    if agree not in ("step", "trajectory"):
        raise ValueError(f"agree must be step or trajectory, got {agree!r}")
    if len(a) != len(b):
        raise ValueError(f"the two sources hold {len(a)} and {len(b)} trajectories")
    report, out = ConsensusReport(), []
    for i, (ta, tb) in enumerate(zip(a, b)):
        if ta.input != tb.input or [s.action for s in ta.steps] != [s.action for s in tb.steps]:
            raise ValueError(f"trajectory {i} differs between the two sources (input or actions)")
        la = [hard(s.label, threshold) for s in ta.steps]
        lb = [hard(s.label, threshold) for s in tb.steps]
        both = [x is not None and y is not None for x, y in zip(la, lb)]
        if agree == "step":
            keep = [x if ok and x == y else None for x, y, ok in zip(la, lb, both)]
        else:
            same = first_wrong(la) == first_wrong(lb)
            keep = [x if same else None for x in la]
        kept = sum(k is not None for k in keep)
        missing = len(la) - sum(both)
        report.trajectories += 1
        report.trajectories_kept += kept > 0
        report.steps += len(la)
        report.labelled_both += sum(both)
        report.kept += kept
        report.dropped_missing += missing if agree == "step" else 0
        if agree == "step":
            report.dropped_disagree += sum(ok and x != y for x, y, ok in zip(la, lb, both))
        else:
            report.dropped_disagree += sum(k is None and x is not None for k, x in zip(keep, la))
        steps = tuple(replace(s, label=k) for s, k in zip(ta.steps, keep))
        note = {"agree": agree, "kept": kept, "dropped_missing": missing}
        out.append(Trajectory(ta.input, ta.target, steps, {**ta.meta, "consensus": note}))
    return out, report
