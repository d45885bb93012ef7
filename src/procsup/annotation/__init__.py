"""Step labels without human annotators: exact checkers of synthetic tasks label sampled or corrupted traces."""

from procsup.annotation.oracle import inject_corruptions, oracle_label, sample_generate, sample_traces, with_answer_step

__all__ = ["inject_corruptions", "oracle_label", "sample_generate", "sample_traces", "with_answer_step"]
