"""A merge recipe: ``models merge RECIPE.toml`` reads one.

::

    name = "smollm2-soup"              # the output's store name
    method = "slerp"                   # linear | slerp | task_arithmetic | ties | dare_ties | lora
    quantization = "Q4_1"              # GGUF only; default: the first input's own type
    [parameters]
    t = 0.5                            # slerp; density for ties / dare_ties
    [[inputs]]
    model = "smollm2-135m-instruct"    # by store name
    [[inputs]]
    model = "smollm2-tuned"

``base`` names the model the task vectors are taken from (task_arithmetic, ties,
dare_ties) or the model a LoRA adapter is baked into (lora, with ``[[adapters]]`` of
``path`` and ``scale``). Everything is checked when the recipe is read, so a merge never
starts on a recipe that cannot finish; the messages name the field.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from ..errors import ManifestError
from ..store.manifest_fields import ModelName, StrictModel

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["QUANTIZATIONS", "Adapter", "MergeInput", "MergeParameters", "MergeRecipe", "Method"]

Method = Literal["linear", "slerp", "task_arithmetic", "ties", "dare_ties", "lora"]
# llama.cpp's quantizer targets a GGUF output may ask for ("same": the first input's type)
QUANTIZATIONS = (
    "same", "F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_1", "Q5_0",
    "Q4_K_M", "Q4_K_S", "Q4_1", "Q4_0", "Q3_K_M", "Q2_K",
)  # fmt: skip
_WITH_BASE = ("task_arithmetic", "ties", "dare_ties", "lora")


class MergeInput(StrictModel):
    model: ModelName
    weight: float = Field(default=1.0, allow_inf_nan=False)


class Adapter(StrictModel):
    """A LoRA adapter in GGUF form; a relative path is taken from the recipe's folder."""

    path: str = Field(min_length=1)
    scale: float = Field(default=1.0, allow_inf_nan=False)


class MergeParameters(StrictModel):
    t: float = Field(default=0.5, ge=0.0, le=1.0, description="slerp: 0 = first input")
    density: float = Field(default=0.5, gt=0.0, le=1.0, description="ties, dare_ties")
    normalize: bool = Field(default=True, description="linear: divide by the weights' sum")


class MergeRecipe(StrictModel):
    name: ModelName
    description: str = ""
    method: Method
    base: ModelName | None = None
    inputs: list[MergeInput] = Field(default_factory=list)
    adapters: list[Adapter] = Field(default_factory=list)
    parameters: MergeParameters = Field(default_factory=MergeParameters)
    quantization: Literal[QUANTIZATIONS] = "same"  # type: ignore[valid-type]
    seed: int = Field(default=0, ge=0, lt=2**63, description="dare_ties: the drops' seed")
    build: bool = Field(default=True, description="encoders: build ONNX after the merge")

    @model_validator(mode="after")
    def _shape(self) -> MergeRecipe:
        _check_inputs(self)
        return self

    @classmethod
    def from_file(cls, path: Path) -> MergeRecipe:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ManifestError(f"cannot read merge recipe {path}: {exc}") from exc
        return cls.from_dict(data, where=f"merge recipe {path}")

    @classmethod
    def from_dict(cls, data: dict[str, object], where: str = "merge recipe") -> MergeRecipe:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'recipe'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ManifestError(f"{where} is invalid: {problems}") from None

    def as_record(self) -> dict[str, Any]:
        """The recipe as the merge record keeps and compares it."""
        return self.model_dump(mode="json")

    def sources(self) -> list[str]:
        """The store models the merge reads, in order, each once (the base first)."""
        names = ([self.base] if self.base else []) + [i.model for i in self.inputs]
        return list(dict.fromkeys(names))


def _check_inputs(recipe: MergeRecipe) -> None:
    method, count = recipe.method, len(recipe.inputs)
    if method in _WITH_BASE and recipe.base is None:
        raise ValueError(f'method {method!r} needs a base model (base = "...")')
    if method not in _WITH_BASE and recipe.base is not None:
        raise ValueError(f"method {method!r} takes no base; list the models under [[inputs]]")
    if method == "lora":
        if count or not recipe.adapters:
            raise ValueError("method 'lora' bakes [[adapters]] into base, and takes no inputs")
    elif recipe.adapters:
        raise ValueError("[[adapters]] are for method 'lora'")
    elif method == "slerp" and count != 2:
        raise ValueError(f"slerp merges exactly 2 inputs, got {count}")
    elif count == 0:
        raise ValueError(f"method {method!r} needs at least one [[inputs]] model")
    total = sum(i.weight for i in recipe.inputs)
    if method == "linear" and recipe.parameters.normalize and abs(total) < 1e-12:
        raise ValueError("linear weights sum to 0: nothing to divide by")
    if recipe.name in recipe.sources():
        raise ValueError(f"the output name {recipe.name!r} is also an input")
