"""BORT's optimal subarchitecture extraction (de Wynter and Perry, arXiv 2010.10499): over a space
of depths D, heads A, widths H and feed-forward widths I of the teacher's family, find the
architecture f with the best W-coefficient against the space's maximum point T,

    W(f) = ((p(T) - p(f)) / p(T)) x ((i(T) - i(f)) / i(T)) x (1 / e(f)),

where p is the encoder layers' parameter count, i the operations per token at a stated sequence
length (both exact and analytic, nn/costs.py) and e a surrogate error: the held-out masked-LM
cross-entropy of a fresh student after a short distillation from the teacher with BORT's loss.
The approximation scheme trains one surrogate per interval of candidates whose size-and-speed
factors are within (1 - epsilon) of each other; exhaustive mode trains them all. Every choice the
paper leaves open is ours and documented in docs/extraction.md.
"""

from .outputs import markdown_table, pareto_front, ranking
from .search import Candidate, ExtractionConfig, ExtractionResult, extract, extract_from_files, plan, surrogate_error
from .space import DEFAULT_SPACE, Architecture, Costs, SearchSpace, costs, size_speed_factor

__all__ = [
    "Architecture", "Candidate", "Costs", "DEFAULT_SPACE", "ExtractionConfig", "ExtractionResult", "SearchSpace",
    "costs", "extract", "extract_from_files", "markdown_table", "pareto_front", "plan", "ranking", "size_speed_factor",
    "surrogate_error",
]
