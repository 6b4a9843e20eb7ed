"""Model merging: one model from several fine-tunes of one architecture (issue 20).

:mod:`.methods` holds the per-tensor math (linear, SLERP, task arithmetic, TIES, DARE-TIES);
reading, checking and writing whole models builds on it.
"""

from .methods import dare_ties, linear, slerp, task_arithmetic, ties

__all__ = ["dare_ties", "linear", "slerp", "task_arithmetic", "ties"]
