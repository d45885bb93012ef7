"""Step labels without human annotators.

* exact checkers of synthetic tasks label sampled or corrupted traces (:mod:`procsup.annotation.oracle`);
* a policy's rollouts estimate them on any task or trajectory file with answers: Monte Carlo completions
  of every step (:func:`mc_labels`), first-error binary search with reused rollouts
  (:func:`first_error_labels`), and consensus filtering of two annotators (:func:`consensus`);
  :func:`label_quality` scores labels against the exact checkers; :mod:`procsup.annotation.run` is
  ``procsup annotate`` (append-only, resumable, sharded).
"""

from procsup.annotation.answer_task import AnswerTask
from procsup.annotation.consensus import ConsensusReport, consensus
from procsup.annotation.first_error import first_error_labels
from procsup.annotation.mc import mc_labels
from procsup.annotation.oracle import inject_corruptions, label_traces, oracle_label, orm_labels
from procsup.annotation.quality import exact_unit_labels, label_quality

__all__ = ["AnswerTask", "ConsensusReport", "consensus", "exact_unit_labels", "first_error_labels", "inject_corruptions",
           "label_quality", "label_traces", "mc_labels", "oracle_label", "orm_labels"]
