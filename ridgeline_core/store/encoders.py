"""An embedding model's files in the store: which built variant is used, the digest of the
ONNX file loaded (what anything trained on its vectors depends on), and opening the encoder
with its tokenizer. Shared by the edge agent (cache, memory, specialists) and the broker
(its learned router)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ModelError, ModelNotPulledError
from .manifest import ModelManifest
from .store import ModelStore

if TYPE_CHECKING:
    from ..runtime.onnx import OnnxEncoder

__all__ = ["encoder_sha256", "encoder_variant", "open_encoder"]


def encoder_variant(manifest: ModelManifest, variant: str | None) -> str:
    """The built variant chosen (the build's default if none); "as stored" for an ONNX
    file pulled as is."""
    if manifest.build is None:
        return "as stored"
    return variant or manifest.build.default_variant


def encoder_sha256(manifest: ModelManifest, store: ModelStore, variant: str | None) -> str:
    """The digest of the ONNX file the encoder loads."""
    if manifest.build is None:
        return manifest.sha256
    store.open_built(manifest, variant)  # not built: a clear error
    record = store.build_record(manifest)
    assert record is not None
    return record.artifacts[encoder_variant(manifest, variant)].sha256


def open_encoder(
    manifest: ModelManifest,
    store: ModelStore,
    *,
    variant: str | None = None,
    threads: int | None = None,
    build_command: str = "edge-agent models build",
) -> OnnxEncoder:
    """The ONNX encoder of an embedding model: its built file (checked), or the ONNX file
    pulled as is, and the tokenizer that goes with it."""
    from ..runtime.onnx import OnnxEncoder

    if manifest.role != "embedding" or manifest.runtime != "onnx":
        raise ModelError(
            f"model {manifest.name!r} is a {manifest.runtime} {manifest.role} model; "
            "an ONNX embedding model is needed (for example all-minilm-l6-v2)"
        )
    if manifest.build is not None and (
        not store.is_present(manifest) or store.build_record(manifest) is None
    ):
        raise ModelNotPulledError(
            f"embedding model {manifest.name!r} is not built (run: {build_command} {manifest.name})"
        )
    files = store.open_files(manifest)
    if manifest.build is not None:
        model = store.open_built(manifest, variant)
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
        threads=threads,
        pooling=pooling,
        normalize=normalize,
    )
