"""``models build``: turn a model's stored weights into the files its runtime loads.

Only one kind today, ``bert-onnx``: a BERT encoder's safetensors weights become an ONNX
graph (fp32) and its dynamically quantised int8 variant (see
:mod:`ridgeline_core.runtime.onnx_build`). Each output goes into the store as a blob
named by its sha256, and ``builds/<name>.json`` records the digests of the inputs and of
every output, so a load checks the ONNX file like a pulled one, and a manifest that
changes its weights makes the old build invisible instead of silently stale.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import time
from pathlib import Path

from ..errors import ModelError
from ..progress import NULL_PROGRESS, Progress
from .manifest import ModelManifest
from .store import BuildRecord, BuiltFile, ModelStore

__all__ = ["BuildResult", "build_model"]


class BuildResult:
    def __init__(self, record: BuildRecord, built: bool, seconds: float) -> None:
        self.record = record
        self.built = built  # False when an up-to-date build was already there
        self.seconds = seconds


def build_model(
    store: ModelStore,
    manifest: ModelManifest,
    progress: Progress = NULL_PROGRESS,
    *,
    force: bool = False,
) -> BuildResult:
    """Pull the model if needed, then build every variant its manifest lists."""
    spec = manifest.build
    if spec is None:
        raise ModelError(
            f"model {manifest.name!r} needs no build: its {manifest.format} file is loaded as is"
        )
    from ..runtime.onnx_build import RECIPE, build_bert_encoder, quantize_int8

    started = time.monotonic()
    existing = _up_to_date(store, manifest, RECIPE, force)
    if existing is not None:
        return BuildResult(existing, False, time.monotonic() - started)
    store.pull(manifest, progress)
    files = store.open_files(manifest, progress)

    artifacts: dict[str, BuiltFile] = {}
    with store.scratch("build-") as scratch:
        fp32 = scratch / "model.onnx"
        progress.start(f"building {manifest.name}: ONNX graph from the weights", None)
        try:
            build_bert_encoder(files["model"], files["config.json"], fp32)
        finally:
            progress.finish()
        if "fp32" in spec.variants:
            artifacts["fp32"] = _add(store, fp32)
        if "int8" in spec.variants:
            int8 = scratch / "model.int8.onnx"
            progress.start(f"building {manifest.name}: int8 dynamic quantisation", None)
            try:
                quantize_int8(fp32, int8)
            finally:
                progress.finish()
            artifacts["int8"] = _add(store, int8)
    record = BuildRecord(
        model=manifest.name,
        inputs=store.inputs_of(manifest),
        artifacts=artifacts,
        recipe=RECIPE,
        builder={name: _version(name) for name in ("ridgeline", "onnx", "onnxruntime")},
        seconds=round(time.monotonic() - started, 2),
        built_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    store.save_build_record(manifest, record)
    return BuildResult(record, True, time.monotonic() - started)


def _up_to_date(
    store: ModelStore, manifest: ModelManifest, recipe: str, force: bool
) -> BuildRecord | None:
    """The existing build when it is complete, intact and made by this recipe."""
    spec, existing = manifest.build, store.build_record(manifest)
    assert spec is not None
    if existing is None or force or existing.recipe != recipe:
        return None
    if not set(spec.variants) <= set(existing.artifacts):
        return None
    try:
        for variant in spec.variants:
            store.open_built(manifest, variant)
    except ModelError:
        return None  # a built file is missing or damaged: build again
    return existing


def _add(store: ModelStore, path: Path) -> BuiltFile:
    digest, size = store.add_file(path)
    return BuiltFile(sha256=digest, size=size)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
