"""Model merging: one model from several fine-tunes of one architecture (issue 20).

:mod:`.methods` holds the per-tensor math (linear, SLERP, task arithmetic, TIES,
DARE-TIES); :mod:`.recipe` the recipe ``models merge`` reads; :mod:`.tensors` and
:mod:`.writers` read and write GGUF and safetensors one tensor at a time; :mod:`.lora`
bakes LoRA adapters; :mod:`.plan` runs one merge and :mod:`.run` makes its output a store
entry (:mod:`.entry`). Importing this package loads no model and no native library.
"""

from .methods import dare_ties, linear, slerp, task_arithmetic, ties
from .recipe import MergeRecipe
from .run import MergeResult, merge_models

__all__ = [
    "MergeRecipe",
    "MergeResult",
    "dare_ties",
    "linear",
    "merge_models",
    "slerp",
    "task_arithmetic",
    "ties",
]
