"""The embedding model's files in the store: which built variant the agent uses, the digest
of the ONNX file it loads (what a trained head depends on), and opening the encoder from
them with its tokenizer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ridgeline_core.errors import ModelError, ModelNotPulledError
from ridgeline_core.store import ModelStore
from ridgeline_core.store.manifest import ModelManifest

from ..settings import EmbeddingSettings

if TYPE_CHECKING:
    from ridgeline_core.runtime.onnx import OnnxEncoder

__all__ = ["encoder_sha256", "encoder_variant", "open_encoder"]


def encoder_variant(manifest: ModelManifest, settings: EmbeddingSettings) -> str:
    """The built variant the settings choose (the build's default if none); "as stored"
    for an ONNX file pulled as is."""
    if manifest.build is None:
        return "as stored"
    return settings.variant or manifest.build.default_variant


def encoder_sha256(manifest: ModelManifest, store: ModelStore, settings: EmbeddingSettings) -> str:
    """The digest of the ONNX file the encoder loads (what a trained head depends on)."""
    if manifest.build is None:
        return manifest.sha256
    store.open_built(manifest, settings.variant)  # not built: a clear error
    record = store.build_record(manifest)
    assert record is not None
    return record.artifacts[encoder_variant(manifest, settings)].sha256


def open_encoder(
    manifest: ModelManifest, store: ModelStore, settings: EmbeddingSettings
) -> OnnxEncoder:
    """The ONNX encoder of an embedding model: its built file (checked), or the ONNX file
    pulled as is, and the tokenizer that goes with it."""
    from ridgeline_core.runtime.onnx import OnnxEncoder

    if manifest.role != "embedding" or manifest.runtime != "onnx":
        raise ModelError(
            f"embeddings.model {manifest.name!r} is a {manifest.runtime} {manifest.role} model; "
            "an ONNX embedding model is needed (for example all-minilm-l6-v2)"
        )
    if manifest.build is not None and (
        not store.is_present(manifest) or store.build_record(manifest) is None
    ):
        raise ModelNotPulledError(
            f"embedding model {manifest.name!r} is not built "
            f"(run: edge-agent models build {manifest.name})"
        )
    files = store.open_files(manifest)
    if manifest.build is not None:
        model = store.open_built(manifest, settings.variant)
        max_length = manifest.build.max_length
        pooling, normalize = manifest.build.pooling, manifest.build.normalize
    else:  # an ONNX file pulled as is
        model = files["model"]
        max_length = manifest.context_length or 512
        pooling, normalize = "mean", True
    if "tokenizer.json" not in files:
        raise ModelError(f"model {manifest.name!r} lists no tokenizer.json in its files")
    return OnnxEncoder(
        model,
        files["tokenizer.json"],
        name=manifest.name,
        max_length=max_length,
        threads=settings.threads,
        pooling=pooling,
        normalize=normalize,
    )
