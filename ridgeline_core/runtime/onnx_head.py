"""A small classifier head on ONNX Runtime: embeddings in, label probabilities out (the
graph ``onnx_build.build_softmax_head`` writes)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import InvalidRequestError, ModelError, ModelLoadError
from .onnx_session import open_session, session_threads
from .onnx_text import Vectors

__all__ = ["OnnxClassifierHead"]


class OnnxClassifierHead:
    """Embeddings to label probabilities: a graph from ``embedding`` float32 [batch, dim]
    to ``probabilities`` float32 [batch, n_labels] (see ``onnx_build.build_softmax_head``).
    """

    def __init__(self, model: Path, labels: Sequence[str], *, threads: int | None = 1) -> None:
        self.labels = list(labels)
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be distinct: {self.labels}")
        self._session = open_session(model, session_threads(threads), "classifier head")
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 2 or len(outputs) != 1:
            raise ModelLoadError(
                f"classifier head {model} must have one [batch, dim] input and one output"
            )
        self._input = inputs[0].name
        self._output = outputs[0].name
        dim, n_labels = inputs[0].shape[1], outputs[0].shape[-1]
        self.dim = dim if isinstance(dim, int) else None
        if n_labels != len(self.labels):
            raise ModelLoadError(
                f"classifier head {model} outputs {n_labels} probabilities but "
                f"{len(self.labels)} labels were given ({', '.join(self.labels)}); "
                "the head and its labels come from different trainings"
            )

    def predict_proba(self, embeddings: npt.NDArray[np.floating[Any]]) -> Vectors:
        """float32 [batch, n_labels] for embeddings [batch, dim]; one vector [dim] is a batch
        of one."""
        session = self._session
        if session is None:
            raise ModelError("the classifier head was closed")
        batch = np.asarray(embeddings, dtype=np.float32)
        if batch.ndim == 1:
            batch = batch[None, :]
        if batch.ndim != 2 or (self.dim is not None and batch.shape[1] != self.dim):
            raise InvalidRequestError(
                f"embeddings must be [batch, {self.dim}], got shape {list(batch.shape)}"
            )
        (probs,) = session.run([self._output], {self._input: np.ascontiguousarray(batch)})
        return np.asarray(probs, dtype=np.float32)

    def close(self) -> None:
        self._session = None
