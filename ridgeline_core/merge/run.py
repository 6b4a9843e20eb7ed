"""``models merge RECIPE.toml``: merge store models tensor by tensor into a new entry.

Two families: GGUF language models (dequantised to float32, merged, written as GGUF and
quantised by llama.cpp's own quantizer, so the output runs on the llama.cpp runtime; a
LoRA adapter in GGUF can be baked into its base) and safetensors encoders (merged in
their own types, then built to ONNX by ``models build``). The output is a store entry
like a pulled model: a blob named by its sha256, a manifest, and a merge record with the
recipe and the digests of the inputs (:mod:`.entry`).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..progress import NULL_PROGRESS, Progress
from ..store.manifest import ManifestCatalog, ModelManifest
from ..store.records import BuiltFile
from ..store.store import ModelStore
from .entry import MergeRecord, manifest_path, record_of, save_entry
from .plan import MergePlan, open_plan
from .recipe import MergeRecipe

__all__ = ["MergeResult", "merge_models"]


@dataclass(frozen=True)
class MergeResult:
    manifest: ModelManifest
    record: MergeRecord
    merged: bool  # False: an up-to-date merge of this recipe was already stored
    seconds: float


def merge_models(
    store: ModelStore,
    catalog: ManifestCatalog,
    recipe: MergeRecipe,
    recipe_path: Path,
    progress: Progress = NULL_PROGRESS,
    *,
    force: bool = False,
    threads: int = 1,
) -> MergeResult:
    """Merge the recipe's inputs into the store entry ``recipe.name`` (see the module)."""
    started = time.monotonic()
    sources = [catalog.get(name) for name in recipe.sources()]
    _check_output_name(catalog, recipe)
    inputs = {m.name: m.sha256 for m in sources}
    with open_plan(store, recipe, recipe_path, sources, progress) as plan:
        inputs.update(plan.adapter_digests)
        existing = _up_to_date(store, recipe, inputs)
        if existing is not None and not force:
            manifest = ModelManifest.from_file(manifest_path(store, recipe.name))
            return MergeResult(manifest, existing, False, time.monotonic() - started)
        _remove_debris(store.root / "tmp")
        with store.scratch(f"merge-{os.getpid()}-") as scratch:
            output = plan.run(scratch, threads)
            digest, size = store.add_file(output)
    record = MergeRecord(
        model=recipe.name,
        recipe=recipe.as_record(),
        recipe_path=str(recipe_path),
        inputs=inputs,
        output=BuiltFile(sha256=digest, size=size),
        builder={name: _version(name) for name in ("ridgeline", "gguf", "llama_cpp_python")},
        seconds=round(time.monotonic() - started, 2),
        merged_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    table = _manifest_table(plan, recipe, recipe_path, digest, size)
    manifest = ModelManifest.from_dict(table)  # checked before it is written
    save_entry(store, record, table)
    return MergeResult(manifest, record, True, time.monotonic() - started)


def _check_output_name(catalog: ManifestCatalog, recipe: MergeRecipe) -> None:
    if recipe.name in catalog and catalog.get(recipe.name).source.kind != "merge":
        raise ModelError(
            f"the output name {recipe.name!r} is a model of the catalog; a merge may only "
            "replace an earlier merge: choose another name"
        )


def _up_to_date(
    store: ModelStore, recipe: MergeRecipe, inputs: dict[str, str]
) -> MergeRecord | None:
    record = record_of(store, recipe.name)
    if record is None or record.inputs != inputs or record.recipe != recipe.as_record():
        return None
    blob = store.blob_path(record.output.sha256)
    if not blob.is_file() or not manifest_path(store, recipe.name).is_file():
        return None
    return record


def _manifest_table(
    plan: MergePlan, recipe: MergeRecipe, recipe_path: Path, digest: str, size: int
) -> dict[str, Any]:
    """The template input's manifest with the merged file, its name and its source."""
    source = {"kind": "merge", "recipe": str(recipe_path)}
    table = plan.template.model_dump(mode="json", exclude_none=True)
    used = ", ".join(recipe.sources())
    table.update(
        name=recipe.name,
        description=recipe.description or f"{recipe.method} merge of {used}",
        sha256=digest,
        size=size,
        source=source,
        files=[{**f, "source": source} for f in table.get("files", [])],
    )
    return table


def _remove_debris(tmp: Path) -> None:
    """The scratch folders of merges that were killed (their process is gone)."""
    for folder in tmp.glob("merge-*-*"):
        pid = folder.name.split("-")[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
