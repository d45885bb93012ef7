"""Step labels without human annotators: exact checkers of synthetic tasks label sampled or corrupted traces."""

from procsup.annotation.oracle import inject_corruptions, label_traces, oracle_label, orm_labels

__all__ = ["inject_corruptions", "label_traces", "oracle_label", "orm_labels"]
