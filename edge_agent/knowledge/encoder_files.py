"""The embedding model's files in the store, as the edge's settings choose them (the
shared logic is :mod:`ridgeline_core.store.encoders`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ridgeline_core.errors import ModelError
from ridgeline_core.store import ModelStore, encoders
from ridgeline_core.store.manifest import ModelManifest

from ..settings import EmbeddingSettings

if TYPE_CHECKING:
    from ridgeline_core.runtime.onnx import OnnxEncoder

__all__ = ["encoder_sha256", "encoder_variant", "open_encoder"]


def encoder_variant(manifest: ModelManifest, settings: EmbeddingSettings) -> str:
    """The built variant the settings choose (the build's default if none); "as stored"
    for an ONNX file pulled as is."""
    return encoders.encoder_variant(manifest, settings.variant)


def encoder_sha256(manifest: ModelManifest, store: ModelStore, settings: EmbeddingSettings) -> str:
    """The digest of the ONNX file the encoder loads (what a trained head depends on)."""
    return encoders.encoder_sha256(manifest, store, settings.variant)


def open_encoder(
    manifest: ModelManifest, store: ModelStore, settings: EmbeddingSettings
) -> OnnxEncoder:
    """The ONNX encoder of an embedding model (see :func:`encoders.open_encoder`)."""
    if manifest.role != "embedding" or manifest.runtime != "onnx":
        raise ModelError(
            f"embeddings.model {manifest.name!r} is a {manifest.runtime} {manifest.role} model; "
            "an ONNX embedding model is needed (for example all-minilm-l6-v2)"
        )
    return encoders.open_encoder(
        manifest, store, variant=settings.variant, threads=settings.threads
    )
