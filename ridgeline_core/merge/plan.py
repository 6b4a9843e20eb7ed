"""One merge, from checked inputs to the output file: which family, which files, and the
loop that reads, merges and writes one tensor at a time.

:func:`open_plan` pulls the inputs if needed, opens their tensor tables and refuses what
cannot be merged (mixed formats, other architectures or tensor shapes, other
tokenizers, an adapter for another model) before any tensor is read.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ModelError
from ..progress import Progress
from ..store.manifest import ModelManifest
from ..store.store import ModelStore
from . import methods
from .lora import LoraAdapters
from .recipe import MergeRecipe
from .tensors import GgufTensors, SafetensorsFile, TensorFile, TensorInfo, check_compatible
from .writers import GgufOut, SafetensorsOut, file_type, file_type_name, quantize_gguf

__all__ = ["MergePlan", "combine", "open_plan"]

Array = npt.NDArray[Any]
_IGNORED_CONFIG = ("_name_or_path", "transformers_version", "torch_dtype")


class MergePlan:
    def __init__(
        self,
        recipe: MergeRecipe,
        sources: list[ModelManifest],
        files: dict[str, TensorFile],
        adapters: LoraAdapters | None,
        progress: Progress,
    ) -> None:
        self.recipe, self.files, self.adapters, self.progress = recipe, files, adapters, progress
        self.template = sources[0]  # the base, else the first input: metadata, companions
        self.gguf = self.template.format == "gguf"
        self.adapter_digests = adapters.digests if adapters else {}

    def run(self, scratch: Path, threads: int) -> Path:
        """Merge into a file under ``scratch``; returns its path."""
        first = self.files[self.template.name]
        if not self.gguf:
            out = scratch / "model.safetensors"
            self._write(SafetensorsOut(out, list(first.tensors.values())))
            return out
        assert isinstance(first, GgufTensors)
        full, out = scratch / "merged.f32.gguf", scratch / "merged.gguf"
        self._write(GgufOut(full, first, unchanged(self.recipe, self.files, first, self.adapters)))
        ftype = self._file_type(first)
        self.progress.start(f"{self.recipe.name}: quantizing to {file_type_name(ftype)}", None)
        try:
            quantize_gguf(full, out, ftype, threads)
        finally:
            self.progress.finish()
        full.unlink()
        return out

    def _file_type(self, first: GgufTensors) -> int:
        if self.recipe.quantization != "same":
            return file_type(self.recipe.quantization)
        field = first.reader.fields.get("general.file_type")
        return int(field.contents()) if field is not None else 0

    def _write(self, out: GgufOut | SafetensorsOut) -> None:
        tensors = list(self.files[self.template.name].tensors.values())
        sizes = [int(np.prod(info.shape, dtype=np.int64)) * 4 for info in tensors]
        self.progress.start(f"{self.recipe.name}: {self.recipe.method} merge", sum(sizes))
        try:
            kept = out.kept if isinstance(out, GgufOut) else set()
            for info, size in zip(tensors, sizes, strict=True):
                out.write(info, None if info.name in kept else self._tensor(info))
                self.progress.advance(size)  # float32 bytes merged
        finally:
            out.close()
            self.progress.finish()

    def _tensor(self, info: TensorInfo) -> Array:
        if not info.floating:  # token type ids, position ids: the template's own
            return self.files[self.template.name].read(info.name)
        values = {name: f.read(info.name) for name, f in self.files.items()}
        try:
            if self.adapters is not None:
                return self.adapters.bake(info.name, values[self.template.name])
            return combine(self.recipe, info.name, values)
        except ValueError as exc:
            raise ModelError(f"cannot merge tensor {info.name!r}: {exc}") from exc


def unchanged(
    recipe: MergeRecipe,
    files: dict[str, TensorFile],
    first: GgufTensors,
    adapters: LoraAdapters | None,
) -> set[str]:
    """The tensors a merge leaves as ``first`` stores them: every source holds the same
    bytes (and the method returns its input for equal inputs), or no adapter touches them."""
    names = set(first.tensors)
    if adapters is not None:
        return {n for n in names if not adapters.touches(n)}
    if recipe.method == "linear" and not recipe.parameters.normalize:
        return set()  # Σ wᵢ x is not x
    others = [f for f in files.values() if f is not first]
    return {n for n in names if all(_same(first, other, n) for other in others)}


def _same(a: TensorFile, b: TensorFile, name: str) -> bool:
    return a.tensors[name].kind == b.tensors[name].kind and a.stored(name) == b.stored(name)


def combine(recipe: MergeRecipe, name: str, values: dict[str, Array]) -> Array:
    """One tensor of the merge, from each source model's values by model name."""
    inputs = [values[i.model] for i in recipe.inputs]
    weights = [i.weight for i in recipe.inputs]
    p = recipe.parameters
    if recipe.method == "linear":
        return methods.linear(inputs, weights, p.normalize)
    if recipe.method == "slerp":
        return methods.slerp(inputs[0], inputs[1], p.t)
    assert recipe.base is not None
    base = values[recipe.base]
    if recipe.method == "task_arithmetic":
        return methods.task_arithmetic(base, inputs, weights)
    if recipe.method == "ties":
        return methods.ties(base, inputs, weights, p.density)
    return methods.dare_ties(base, inputs, weights, p.density, seed=recipe.seed, name=name)


@contextlib.contextmanager
def open_plan(
    store: ModelStore,
    recipe: MergeRecipe,
    recipe_path: Path,
    sources: list[ModelManifest],
    progress: Progress,
) -> Iterator[MergePlan]:
    """The checked plan, its files open for the ``with`` block."""
    _check_family(recipe, sources)
    with contextlib.ExitStack() as stack:
        files: dict[str, TensorFile] = {}
        paths: dict[str, dict[str, Path]] = {}
        for manifest in sources:
            store.pull(manifest, progress)
            paths[manifest.name] = store.open_files(manifest, progress)
            kind = GgufTensors if manifest.format == "gguf" else SafetensorsFile
            opened = kind(paths[manifest.name]["model"], f"model {manifest.name!r}")
            stack.callback(opened.close)
            files[manifest.name] = opened
        check_compatible(list(files.values()))
        if sources[0].format == "gguf":
            _check_vocabularies(sources, files)
        else:
            _check_companions(sources, paths)
        adapters = None
        if recipe.adapters:
            first = files[sources[0].name]
            assert isinstance(first, GgufTensors)
            adapters = LoraAdapters.open(recipe, recipe_path, first, stack)
        yield MergePlan(recipe, sources, files, adapters, progress)


def _check_family(recipe: MergeRecipe, sources: list[ModelManifest]) -> None:
    formats = sorted({m.format for m in sources})
    if len(formats) > 1:
        raise ModelError(f"cannot merge models of different formats ({', '.join(formats)})")
    if formats[0] not in ("gguf", "safetensors"):
        raise ModelError(f"models in {formats[0]} format cannot be merged (gguf, safetensors)")
    if recipe.method == "lora" and formats[0] != "gguf":
        raise ModelError("method 'lora' bakes a GGUF adapter into a GGUF model")


def _check_vocabularies(sources: list[ModelManifest], files: dict[str, TensorFile]) -> None:
    """Language models share a vocabulary: the same token ids must mean the same text."""
    first = files[sources[0].name]
    assert isinstance(first, GgufTensors)
    mine = _tokens(first)
    for other in sources[1:]:
        theirs = files[other.name]
        assert isinstance(theirs, GgufTensors)
        if _tokens(theirs) != mine:
            raise ModelError(
                f"model {other.name!r} does not match {sources[0].name!r}: another vocabulary "
                "(tokenizer.ggml.tokens)"
            )


def _tokens(file: GgufTensors) -> list[str] | None:
    field = file.reader.fields.get("tokenizer.ggml.tokens")
    return None if field is None else list(field.contents())


def _check_companions(sources: list[ModelManifest], paths: dict[str, dict[str, Path]]) -> None:
    """Encoders share a tokenizer and a configuration (beyond what tensor shapes show)."""
    first = sources[0]
    digests = {f.name: f.sha256 for f in first.files}
    for other in sources[1:]:
        theirs = {f.name: f.sha256 for f in other.files}
        if theirs.get("tokenizer.json") != digests.get("tokenizer.json"):
            raise ModelError(
                f"model {other.name!r} does not match {first.name!r}: another tokenizer.json"
            )
        mine, yours = (_config(paths[m.name]["config.json"]) for m in (first, other))
        differs = sorted(k for k in mine.keys() | yours.keys() if mine.get(k) != yours.get(k))
        if differs:
            raise ModelError(
                f"model {other.name!r} does not match {first.name!r}: config.json differs "
                f"in {', '.join(differs)}"
            )


def _config(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if k not in _IGNORED_CONFIG}
