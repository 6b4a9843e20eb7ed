"""ONNX Runtime adapter: sentence encoders and small classifier heads.

:class:`OnnxEncoder` runs a BERT-style encoder (ours from
:mod:`ridgeline_core.runtime.onnx_build`, or one exported by other tools) with a Hugging
Face ``tokenizer.json``, and pools its token states into one unit vector per text.
:class:`OnnxClassifierHead` turns such vectors into label probabilities.

``onnxruntime`` and ``tokenizers`` (the ``onnx`` extra) are imported when a model is
loaded, never when this module is. ONNX Runtime sessions and ``tokenizers`` are safe to
call from several threads at once, so one encoder serves concurrent :meth:`embed` calls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ..closing import Closing
from ..errors import (
    EmptyPromptError,
    InvalidRequestError,
    MissingDependencyError,
    ModelError,
    ModelLoadError,
)

__all__ = ["OnnxClassifierHead", "OnnxEncoder"]

log = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]
Pooling = Literal["mean", "cls"]

# The token inputs an encoder may declare; anything else is refused at load.
_TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
# A 2-D output with this name is BERT's tanh-projected [CLS] state, not a sentence embedding.
_NOT_POOLED = {"pooler_output"}
_NUMPY_INTS = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError.for_module("onnxruntime", "onnx") from exc
    return onnxruntime


def _threads(threads: int | None) -> int:
    if threads is not None and threads > 0:
        return threads
    from .threads import default_threads

    return default_threads()


def _session(model: Path, threads: int, what: str) -> Any:
    """An ONNX Runtime CPU session; a file it cannot load is a ModelLoadError."""
    ort = _import_onnxruntime()
    if not Path(model).is_file():
        raise ModelLoadError(f"{what}: no ONNX file at {model}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: warnings go to stderr, not to logging
    try:
        return ort.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
    # onnxruntime's errors (InvalidProtobuf, InvalidGraph, Fail, ...) derive from Exception
    except Exception as exc:
        raise ModelLoadError(
            f"{what}: ONNX Runtime could not load {model}: {exc} (the file is damaged, not an "
            "ONNX model, or needs a newer onnxruntime than this one; for a store model run "
            "`edge-agent models build NAME --force`)"
        ) from exc


class _EncoderGraph:
    """An encoder's ONNX session and what it takes and gives: integer token inputs among
    ``_TOKEN_INPUTS``, and either one vector per text or token states to pool."""

    def __init__(self, model: Path, threads: int, name: str) -> None:
        self.name = name
        self.session: Any = _session(model, threads, name)
        self.inputs = _token_inputs(self.session, model, name)
        self.output, self.pooled = _embedding_output(self.session, model, name)

    def cap_length(self, max_length: int) -> int:
        """``max_length``, or the model's position count when that is smaller."""
        props = self.session.get_modelmeta().custom_metadata_map
        positions = props.get("max_position_embeddings")
        if positions is not None and positions.isdigit() and int(positions) < max_length:
            log.warning(
                "%s: max_length %d exceeds the model's %s positions; inputs are cut there",
                self.name,
                max_length,
                positions,
            )
            return int(positions)
        return max_length

    def declared_dim(self) -> int | None:
        node = next(o for o in self.session.get_outputs() if o.name == self.output)
        last = node.shape[-1]
        return last if isinstance(last, int) and last > 0 else None

    def states(self, ids: Any, mask: Any, types: Any) -> Any:
        """The graph's output for a padded batch."""
        session = self.session
        if session is None:
            raise ModelError(f"{self.name} was closed")
        available = {
            "input_ids": ids,
            "attention_mask": mask,
            "token_type_ids": types,
            "position_ids": np.broadcast_to(np.arange(ids.shape[1], dtype=np.int64), ids.shape),
        }
        feed = {name: available[name].astype(dtype) for name, dtype in self.inputs.items()}
        (states,) = session.run([self.output], feed)
        return states


def _token_inputs(session: Any, model: Path, name: str) -> dict[str, type[np.integer[Any]]]:
    """The graph's inputs and their integer types; any other input is refused."""
    inputs: dict[str, type[np.integer[Any]]] = {}
    for node in session.get_inputs():
        if node.name not in _TOKEN_INPUTS or node.type not in _NUMPY_INTS:
            raise ModelLoadError(
                f"{name}: {model} has input {node.name!r} ({node.type}); a text "
                f"encoder takes integer inputs among {', '.join(_TOKEN_INPUTS)}"
            )
        inputs[node.name] = _NUMPY_INTS[node.type]
    if "input_ids" not in inputs:
        raise ModelLoadError(f"{name}: {model} has no input_ids input")
    return inputs


def _embedding_output(session: Any, model: Path, name: str) -> tuple[str, bool]:
    """The output to read, and whether it is already one vector per text."""
    outputs = session.get_outputs()
    for node in outputs:
        if len(node.shape) == 2 and node.name not in _NOT_POOLED:
            return node.name, True
    for node in outputs:
        if len(node.shape) == 3:
            return node.name, False
    raise ModelLoadError(
        f"{name}: {model} has no [batch, sequence, hidden] or [batch, dim] output "
        f"(outputs: {', '.join(f'{o.name} {o.shape}' for o in outputs)})"
    )


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
        self.threads = _threads(threads)
        self._graph = _EncoderGraph(model, self.threads, name)
        self._max_length = self._graph.cap_length(max_length)
        self._tokenizer, self._pad_id = _load_tokenizer(tokenizer, self._max_length, name)
        probe = [self._tokenizer.encode("dimension probe")]
        self._dim = self._graph.declared_dim() or int(self._run(probe).shape[1])
        self.last_truncated = 0

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_length(self) -> int:
        """Tokens per input, special tokens included; longer inputs are cut."""
        return self._max_length

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> Vectors:
        """One float32 row per text, in order (unit length when ``normalize``)."""
        texts = _checked_texts(texts, batch_size)
        if not texts:
            self.last_truncated = 0
            return np.zeros((0, self._dim), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(texts)
        self.last_truncated = sum(1 for e in encodings if e.overflowing)
        return _in_batches(encodings, batch_size, self._dim, self._run)

    def embed_one(self, text: str) -> npt.NDArray[np.float32]:
        """The vector of one text: float32 [dim]."""
        vector: Vectors = self.embed([text])[0]
        return vector

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the encoder reads for ``texts``, special tokens included, after the cut at
        :attr:`max_length` (what an embeddings API reports as usage)."""
        return sum(len(e.ids) for e in self._tokenizer.encode_batch(list(texts)))

    def _run(self, encodings: Sequence[Any]) -> Vectors:
        return _vectors(self._graph, encodings, self._pad_id, self.pooling, self.normalize)

    def close(self) -> None:
        """Free the session; calls in flight finish, later ones raise ModelError."""
        self._graph.session = None


def _in_batches(
    encodings: Sequence[Any], batch_size: int, dim: int, run: Callable[[list[Any]], Vectors]
) -> Vectors:
    """``run`` over batches, longest inputs first (each batch pads to nearly its own
    length); the rows come back in the inputs' order."""
    order = sorted(range(len(encodings)), key=lambda i: -len(encodings[i].ids))
    result = np.empty((len(encodings), dim), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        result[rows] = run([encodings[i] for i in rows])
    return result


def _check_options(pooling: str, max_length: int) -> None:
    if pooling not in ("mean", "cls"):
        raise ValueError(f"pooling must be 'mean' or 'cls', not {pooling!r}")
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 (for [CLS] and [SEP]): {max_length}")


def _vectors(
    graph: _EncoderGraph, encodings: Sequence[Any], pad_id: int, pooling: Pooling, normalize: bool
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


class OnnxClassifierHead:
    """Embeddings to label probabilities: a graph from ``embedding`` float32 [batch, dim]
    to ``probabilities`` float32 [batch, n_labels] (see ``onnx_build.build_softmax_head``).
    """

    def __init__(self, model: Path, labels: Sequence[str], *, threads: int | None = 1) -> None:
        self.labels = list(labels)
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be distinct: {self.labels}")
        self._session = _session(model, _threads(threads), "classifier head")
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
