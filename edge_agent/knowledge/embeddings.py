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

from ridgeline_core.store import ManifestCatalog, ModelStore

from ..settings import EmbeddingSettings
from .encoder_files import encoder_sha256, encoder_variant
from .encoder_files import open_encoder as open_encoder  # importable from here as before

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
        return encoder_variant(self._catalog.get(self.name), self.settings)

    def model_sha256(self) -> str:
        """The digest of the ONNX file this embedder loads (what a trained head depends on)."""
        return encoder_sha256(self._catalog.get(self.name), self._store, self.settings)

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
