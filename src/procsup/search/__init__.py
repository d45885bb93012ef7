"""Test-time search with a step scorer, over a policy in any mode: best-of-N reranking and step-level
beam search. Both count policy samples, so they compare at equal policy compute."""

from procsup.search.beam import beam_search
from procsup.search.best_of_n import BestOfN, SearchResult, best_of_n, scored, solution_score

__all__ = ["BestOfN", "SearchResult", "beam_search", "best_of_n", "scored", "solution_score"]
