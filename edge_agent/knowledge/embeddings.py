"""The agent's sentence encoder: one ONNX model, loaded on first use, shared by the
specialists, the semantic answer cache and the pre-route memory.

Loading reads the built ONNX file through the store (checked against its sha256) and the
tokenizer next to the weights; nothing loads at construction, so an agent that never
embeds never pays for it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ridgeline_core.errors import ModelError, ModelNotPulledError
from ridgeline_core.store import ManifestCatalog, ModelStore
from ridgeline_core.store.manifest import ModelManifest

from ..settings import EmbeddingSettings

if TYPE_CHECKING:
    from ridgeline_core.runtime.onnx import OnnxEncoder

__all__ = ["Embedder"]

Vectors = npt.NDArray[np.float32]


class Embedder:
    """The configured embedding model, loaded once on first use (thread-safe)."""

    def __init__(
        self, settings: EmbeddingSettings, catalog: ManifestCatalog, store: ModelStore
    ) -> None:
        self.settings = settings
        self.name = settings.model
        self._catalog = catalog
        self._store = store
        self._encoder: OnnxEncoder | None = None
        self._lock = threading.Lock()

    @property
    def encoder(self) -> OnnxEncoder:
        """The loaded encoder (loads it on first use)."""
        encoder = self._encoder
        if encoder is None:
            with self._lock:
                if self._encoder is None:
                    self._encoder = self._load()
                encoder = self._encoder
        return encoder

    @property
    def variant(self) -> str:
        manifest = self._catalog.get(self.name)
        if manifest.build is None:
            return "as stored"
        return self.settings.variant or manifest.build.default_variant

    def model_sha256(self) -> str:
        """The digest of the ONNX file this embedder loads (what a trained head depends on)."""
        manifest = self._catalog.get(self.name)
        if manifest.build is None:
            return manifest.sha256
        self._store.open_built(manifest, self.settings.variant)  # not built: a clear error
        record = self._store.build_record(manifest)
        assert record is not None
        return record.artifacts[self.variant].sha256

    def _load(self) -> OnnxEncoder:
        return open_encoder(self._catalog.get(self.name), self._store, self.settings)

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Unit-length vectors, one row per text."""
        return self.encoder.embed(texts)

    def embed_counted(self, texts: Sequence[str]) -> tuple[Vectors, int]:
        """The vectors and the number of tokens the encoder read (after truncation)."""
        encoder = self.encoder
        return encoder.embed(texts), encoder.count_tokens(texts)

    def embed_one(self, text: str) -> Vectors:
        row: Vectors = self.encoder.embed([text])[0]
        return row

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

    def close(self) -> None:
        with self._lock:
            if self._encoder is not None:
                self._encoder.close()
                self._encoder = None


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
