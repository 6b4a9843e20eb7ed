"""ONNX Runtime adapter: sentence encoders and small classifier heads.

:class:`OnnxEncoder` runs a BERT-style encoder (ours from
:mod:`ridgeline_core.runtime.onnx_build`, or one exported by other tools) with a Hugging
Face ``tokenizer.json``, and pools its token states into one unit vector per text.
:class:`OnnxClassifierHead` turns such vectors into label probabilities.

``onnxruntime`` and ``tokenizers`` (the ``onnx`` extra) are imported when a model is
loaded, never when this module is. ONNX Runtime sessions and ``tokenizers`` are safe to
call from several threads at once, so one encoder serves concurrent :meth:`embed` calls.

The parts: sessions in :mod:`.onnx_session`, the encoder's graph in :mod:`.onnx_graph`,
texts to vectors in :mod:`.onnx_text`, the classifier head in :mod:`.onnx_head`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..closing import Closing
from .onnx_graph import EncoderGraph
from .onnx_head import OnnxClassifierHead
from .onnx_session import session_threads
from .onnx_text import EncoderTexts, Pooling, Vectors, vectors_of

__all__ = ["BATCH_SIZE", "OnnxClassifierHead", "OnnxEncoder"]

BATCH_SIZE = 32  # texts per run of the encoder's graph


class OnnxEncoder(Closing):
    """Text to unit vectors with an ONNX encoder: ``embed(["a", "b"])`` is float32 [2, dim].

    Inputs longer than ``max_length`` tokens (special tokens included) are cut there
    silently; :attr:`last_truncated` says how many were in the last call.
    """

    def __init__(
        self,
        model: Path,
        tokenizer: Path,
        *,
        name: str,
        max_length: int = 256,
        threads: int | None = None,
        pooling: Pooling = "mean",
        normalize: bool = True,
    ) -> None:
        _check_options(pooling, max_length)
        self.name = name
        self.pooling: Pooling = pooling
        self.normalize = normalize
        self.threads = session_threads(threads)
        self._graph = EncoderGraph(model, self.threads, name)
        self._texts = EncoderTexts(tokenizer, self._graph.cap_length(max_length), name)
        probe = [self._texts.tokenizer.encode("dimension probe")]
        self._dim = self._graph.declared_dim() or int(self._run(probe).shape[1])
        self.last_truncated = 0

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_length(self) -> int:
        """Tokens per input, special tokens included; longer inputs are cut."""
        return self._texts.max_length

    def embed(self, texts: Sequence[str], batch_size: int = BATCH_SIZE) -> Vectors:
        """One float32 row per text, in order (unit length when ``normalize``)."""
        vectors, self.last_truncated = self._texts.embed(texts, batch_size, self._dim, self._run)
        return vectors

    def batches(self, texts: Sequence[str], batch_size: int = BATCH_SIZE) -> list[list[int]]:
        """How :meth:`embed` splits ``texts``: the indexes in each batch, in the order run.
        A text's vector depends on its batch (the padding; the int8 build's ranges), and
        one batch's texts embedded on their own, in this order, get the same rows."""
        return self._texts.batches(texts, batch_size)

    def embed_one(self, text: str) -> npt.NDArray[np.float32]:
        """The vector of one text: float32 [dim]."""
        vector: Vectors = self.embed([text])[0]
        return vector

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the encoder reads for ``texts``, special tokens included, after the cut at
        :attr:`max_length` (what an embeddings API reports as usage)."""
        return self._texts.count_tokens(texts)

    def _run(self, encodings: Sequence[Any]) -> Vectors:
        return vectors_of(self._graph, encodings, self._texts.pad_id, self.pooling, self.normalize)

    def close(self) -> None:
        """Free the session; calls in flight finish, later ones raise ModelError."""
        self._graph.session = None


def _check_options(pooling: str, max_length: int) -> None:
    if pooling not in ("mean", "cls"):
        raise ValueError(f"pooling must be 'mean' or 'cls', not {pooling!r}")
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 (for [CLS] and [SEP]): {max_length}")
