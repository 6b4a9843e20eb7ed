"""From texts to an encoder's vectors: checking the texts, the tokenizer (cut at the
encoder's length, unpadded), padding a batch, pooling token states, and running the texts
in batches, longest first."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ..errors import EmptyPromptError, InvalidRequestError, MissingDependencyError, ModelLoadError
from .onnx_graph import EncoderGraph

__all__ = ["EncoderTexts", "Pooling", "Vectors", "vectors_of"]

Vectors = npt.NDArray[np.float32]
Pooling = Literal["mean", "cls"]


class EncoderTexts:
    """The text side of an encoder: its tokenizer (cut at ``max_length``, unpadded),
    counting tokens, and running checked texts in batches, longest first."""

    def __init__(self, path: Path, max_length: int, name: str) -> None:
        self.max_length = max_length
        self.tokenizer, self.pad_id = _load_tokenizer(path, max_length, name)

    def count_tokens(self, texts: Sequence[str]) -> int:
        return sum(len(e.ids) for e in self.tokenizer.encode_batch(list(texts)))

    def embed(
        self,
        texts: Sequence[str],
        batch_size: int,
        dim: int,
        run: Callable[[list[Any]], Vectors],
    ) -> tuple[Vectors, int]:
        """One float32 row per text, in order, from ``run`` on batches of their tokens; and
        how many texts were cut at ``max_length``."""
        texts = _checked_texts(texts, batch_size)
        if not texts:
            return np.zeros((0, dim), dtype=np.float32), 0
        encodings = self.tokenizer.encode_batch(texts)
        truncated = sum(1 for e in encodings if e.overflowing)
        return _in_batches(encodings, batch_size, dim, run), truncated

    def batches(self, texts: Sequence[str], batch_size: int) -> list[list[int]]:
        """The indexes of ``texts`` in each batch :meth:`embed` runs, in the order run."""
        texts = _checked_texts(texts, batch_size)
        return _batch_order(self.tokenizer.encode_batch(texts), batch_size) if texts else []


def _batch_order(encodings: Sequence[Any], batch_size: int) -> list[list[int]]:
    """The batches, as indexes into ``encodings``: longest inputs first (each batch pads
    to nearly its own length), ties in input order."""
    order = sorted(range(len(encodings)), key=lambda i: -len(encodings[i].ids))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def _in_batches(
    encodings: Sequence[Any], batch_size: int, dim: int, run: Callable[[list[Any]], Vectors]
) -> Vectors:
    """``run`` over the batches of :func:`_batch_order`; the rows come back in the inputs'
    order."""
    result = np.empty((len(encodings), dim), dtype=np.float32)
    for rows in _batch_order(encodings, batch_size):
        result[rows] = run([encodings[i] for i in rows])
    return result


def vectors_of(
    graph: EncoderGraph, encodings: Sequence[Any], pad_id: int, pooling: Pooling, normalize: bool
) -> Vectors:
    """One vector per encoding: the graph's output for the padded batch, pooled unless
    the graph pools, unit length when ``normalize``."""
    ids, mask, types = _padded(encodings, pad_id)
    states = graph.states(ids, mask, types)
    vectors = states if graph.pooled else _pool(states, mask, pooling)
    vectors = np.asarray(vectors, dtype=np.float32)
    if normalize:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
    return vectors


def _load_tokenizer(path: Path, max_length: int, name: str) -> tuple[Any, int]:
    """A Hugging Face tokenizer cutting at ``max_length``, unpadded; and its pad id."""
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise MissingDependencyError.for_module("tokenizers", "onnx") from exc
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception
        raise ModelLoadError(
            f"{name}: cannot load tokenizer {path}: {exc} (a Hugging Face tokenizer.json is needed)"
        ) from exc
    # the file's own settings (all-MiniLM-L6-v2's pads and cuts at 128) are replaced:
    # we cut at max_length and pad each batch to its longest item ourselves
    padding = tokenizer.padding
    pad_id = padding["pad_id"] if padding else tokenizer.token_to_id("[PAD]")
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.no_padding()
    return tokenizer, int(pad_id or 0)  # padded positions are masked out anyway


def _checked_texts(texts: Sequence[str], batch_size: int) -> list[str]:
    if isinstance(texts, str):
        raise InvalidRequestError("embed takes a list of texts; use embed_one for one text")
    if batch_size < 1:
        raise InvalidRequestError(f"batch_size must be at least 1, not {batch_size}")
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidRequestError(
                f"text {index} is a {type(text).__name__}, not a str; only text can be embedded"
            )
        if not text.strip():
            raise EmptyPromptError(
                f"text {index} is empty or only whitespace; there is nothing to embed"
            )
    return texts


def _padded(encodings: Sequence[Any], pad_id: int) -> tuple[Any, Any, Any]:
    """Token ids, attention mask and token types of a batch, padded to its longest."""
    length = max(len(e.ids) for e in encodings)
    ids = np.full((len(encodings), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(encodings), length), dtype=np.int64)
    types = np.zeros((len(encodings), length), dtype=np.int64)
    for row, encoding in enumerate(encodings):
        n = len(encoding.ids)
        ids[row, :n] = encoding.ids
        mask[row, :n] = 1
        types[row, :n] = encoding.type_ids
    return ids, mask, types


def _pool(states: Vectors, mask: npt.NDArray[np.int64], pooling: Pooling) -> Vectors:
    if pooling == "cls":
        first: Vectors = states[:, 0]
        return first
    weights = mask[:, :, None].astype(np.float32)
    mean: Vectors = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    return mean
