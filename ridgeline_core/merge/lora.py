"""Bake LoRA adapters (GGUF, as ``llama-export-lora`` and Ridgeline's runtime read them)
into their base model's weights.

An adapter holds, for some weight ``W`` (numpy shape ``[out, in]``), ``W.lora_a``
(``[rank, in]``) and ``W.lora_b`` (``[out, rank]``); llama.cpp applies it as
``W + scale * alpha / rank * (B @ A)`` (``scale`` alone when the adapter has no alpha),
and baking computes the same sum once, so the baked model answers like the base with the
adapter applied at that scale. Scale 0 leaves every weight as it was.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ModelError
from ..store.fetch import sha256_file
from .recipe import MergeRecipe
from .tensors import GgufTensors

__all__ = ["LoraAdapters"]

Array = npt.NDArray[Any]


@dataclass
class _Adapter:
    file: GgufTensors
    scale: float  # the recipe's
    alpha: float  # the adapter's; 0: none
    pairs: dict[str, tuple[str, str]]  # base tensor -> (lora_a, lora_b)


class LoraAdapters:
    def __init__(self, adapters: list[_Adapter], digests: dict[str, str]) -> None:
        self._adapters = adapters
        self.digests = digests  # "adapter:<file name>" -> sha256, for the merge record

    @classmethod
    def open(
        cls, recipe: MergeRecipe, recipe_path: Path, base: GgufTensors, stack: contextlib.ExitStack
    ) -> LoraAdapters:
        adapters, digests = [], {}
        for entry in recipe.adapters:
            path = Path(entry.path).expanduser()
            if not path.is_absolute():
                path = recipe_path.parent / path
            if not path.is_file():
                raise ModelError(f"adapter {entry.path!r}: no such file ({path})")
            file = GgufTensors(path, f"adapter {path.name!r}")
            stack.callback(file.close)
            digests[f"adapter:{path.name}"] = sha256_file(path)
            adapters.append(_checked(file, entry.scale, base))
        return cls(adapters, digests)

    def touches(self, name: str) -> bool:
        """Whether baking changes the base tensor ``name`` (an adapter at scale 0 does not)."""
        return any(name in a.pairs and a.scale != 0 for a in self._adapters)

    def bake(self, name: str, weight: Array) -> Array:
        for adapter in self._adapters:
            if name not in adapter.pairs:
                continue
            a_name, b_name = adapter.pairs[name]
            a, b = adapter.file.read(a_name), adapter.file.read(b_name)
            if a.ndim != 2 or b.ndim != 2 or (b.shape[0], a.shape[1]) != weight.shape:
                raise ModelError(
                    f"{adapter.file.label}: {a_name} {list(a.shape)} and {b_name} "
                    f"{list(b.shape)} do not fit {name} {list(weight.shape)}"
                )
            factor = adapter.scale * adapter.alpha / a.shape[0] if adapter.alpha else adapter.scale
            weight = weight + np.float32(factor) * (b @ a)
        return weight.astype(np.float32, copy=False)


def _checked(file: GgufTensors, scale: float, base: GgufTensors) -> _Adapter:
    fields = file.reader.fields

    def text(key: str) -> str:
        return str(fields[key].contents()) if key in fields else ""

    if text("general.type") != "adapter" or text("adapter.type") != "lora":
        raise ModelError(f"{file.label} is not a LoRA adapter (general.type, adapter.type)")
    if file.architecture != base.architecture:
        raise ModelError(
            f"{file.label} is for architecture {file.architecture!r}, "
            f"the base model is {base.architecture!r}"
        )
    pairs: dict[str, tuple[str, str]] = {}
    for name in file.tensors:
        target, _, part = name.rpartition(".lora_")
        if part not in ("a", "b") or target not in base.tensors:
            raise ModelError(f"{file.label}: tensor {name!r} matches no weight of the base model")
        pairs[target] = (f"{target}.lora_a", f"{target}.lora_b")
    missing = [f"{n}" for pair in pairs.values() for n in pair if n not in file.tensors]
    if missing:
        raise ModelError(f"{file.label}: tensor {missing[0]!r} is missing (LoRA needs a and b)")
    alpha_field = fields.get("adapter.lora.alpha")
    alpha = float(alpha_field.contents()) if alpha_field is not None else 0.0
    return _Adapter(file, scale, alpha, pairs)
