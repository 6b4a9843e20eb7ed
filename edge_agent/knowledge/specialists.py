"""Specialist classifiers: a softmax head on sentence embeddings, trained on the device.

``edge-agent specialists train NAME --examples FILE.jsonl`` embeds labelled examples with
the agent's encoder (:mod:`edge_agent.knowledge.embeddings`), fits a multinomial logistic regression
(full batch, Adam, L2), calibrates it with one temperature fitted on out-of-fold
predictions (k-fold cross-validation on the training examples), and picks the escalation
threshold from those same out-of-fold predictions: the lowest probability at which the
answers kept locally are at least ``target_accuracy`` right. A held-out file, when given, is
only ever used to report accuracy, ECE and coverage, never to fit.

The head is exported to ONNX (MatMul, Add, temperature, Softmax) and stored in the model
store by its sha256; ``<specialists dir>/<name>.json`` records the labels, the encoder it
was trained with (name, variant and the built file's digest) and the measured figures.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, ValidationError

from ridgeline_core.errors import InvalidRequestError, ModelError, UnknownModelError
from ridgeline_core.files import atomic_write
from ridgeline_core.progress import NULL_PROGRESS, Progress
from ridgeline_core.store import ModelStore, check_name

from .embeddings import Embedder

__all__ = [
    "Example",
    "Specialist",
    "SpecialistRecord",
    "SpecialistRegistry",
    "TrainOptions",
    "load_examples",
    "train_specialist",
]

LABEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
MAX_LABELS = 64  # the broker's limit on choices
Matrix = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Example:
    text: str
    label: str


def load_examples(path: Path) -> list[Example]:
    """``{"text": ..., "label": ...}`` per line; errors name the file and line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"cannot read examples {path}: {exc}") from exc
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(item, dict) or set(item) - {"text", "label"}:
            raise InvalidRequestError(f'{where}: expected {{"text": ..., "label": ...}}')
        text, label = item.get("text"), item.get("label")
        if not isinstance(text, str) or not text.strip():
            raise InvalidRequestError(f"{where}: text must be a non-empty string")
        if not isinstance(label, str) or not LABEL_PATTERN.fullmatch(label):
            raise InvalidRequestError(
                f"{where}: label {label!r} must be 1-64 of letters, digits, _ . : - "
                "(starting with a letter or digit)"
            )
        examples.append(Example(text.strip(), label))
    if not examples:
        raise InvalidRequestError(f"{path} has no examples")
    return examples


@dataclass(frozen=True)
class TrainOptions:
    l2: float = 1e-3  # on the weights, per example
    steps: int = 400
    learning_rate: float = 0.05
    folds: int = 5  # out-of-fold predictions for the temperature and the threshold
    target_accuracy: float = 0.99  # of the answers kept locally, on out-of-fold predictions
    min_per_label: int = 5
    seed: int = 0


class SpecialistRecord(BaseModel):
    """``<dir>/<name>.json``: everything needed to load and trust a specialist."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    format: str = "ridgeline-specialist/1"
    name: str
    description: str
    labels: list[str]
    encoder: str  # embedding model name
    encoder_variant: str
    encoder_sha256: str  # the ONNX file the head was trained on
    head_sha256: str
    head_size: int
    temperature: float
    threshold: float
    metrics: dict[str, Any]
    examples_sha256: str
    trained_at: str


# -- training ------------------------------------------------------------------------


def _softmax(logits: Matrix) -> Matrix:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


def _fit(
    x: Matrix, y: npt.NDArray[np.int64], n_labels: int, options: TrainOptions
) -> tuple[Matrix, Matrix]:
    """Multinomial logistic regression by full-batch Adam. ``x`` is standardised by the
    caller; returns weights [dim, labels] and bias [labels]."""
    n, dim = x.shape
    onehot = np.eye(n_labels)[y]
    w, b = np.zeros((dim, n_labels)), np.zeros(n_labels)
    mw, vw, mb, vb = np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(1, options.steps + 1):
        error = (_softmax(x @ w + b) - onehot) / n
        gw = x.T @ error + options.l2 * w
        gb = error.sum(axis=0)
        mw = beta1 * mw + (1 - beta1) * gw
        vw = beta2 * vw + (1 - beta2) * gw * gw
        mb = beta1 * mb + (1 - beta1) * gb
        vb = beta2 * vb + (1 - beta2) * gb * gb
        scale = options.learning_rate * math.sqrt(1 - beta2**step) / (1 - beta1**step)
        w -= scale * mw / (np.sqrt(vw) + eps)
        b -= scale * mb / (np.sqrt(vb) + eps)
    return w, b


def _fit_temperature(logits: Matrix, y: npt.NDArray[np.int64]) -> float:
    """The temperature that minimises the negative log-likelihood (a grid, then refined)."""

    def nll(t: float) -> float:
        probs = _softmax(logits / t)
        return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0)).mean())

    grid = np.exp(np.linspace(math.log(0.05), math.log(20.0), 61))
    best = min(grid, key=nll)
    lo, hi = best / 1.1, best * 1.1
    for _ in range(30):  # golden-section search around the best grid point
        a, c = hi - (hi - lo) / 1.618, lo + (hi - lo) / 1.618
        if nll(a) < nll(c):
            hi = c
        else:
            lo = a
    return float((lo + hi) / 2)


def _pick_threshold(probs: Matrix, correct: npt.NDArray[np.bool_], target: float) -> float:
    """The lowest probability at which the kept answers are at least ``target`` right."""
    top = probs.max(axis=1)
    for t in np.round(np.arange(0.30, 0.991, 0.01), 2):
        kept = top >= t
        if kept.any() and correct[kept].mean() >= target:
            return float(t)
    return 0.99


def _folds(y: npt.NDArray[np.int64], k: int, seed: int) -> npt.NDArray[np.int64]:
    """A stratified fold number per example."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    for label in np.unique(y):
        where = np.flatnonzero(y == label)
        rng.shuffle(where)
        fold[where] = np.arange(len(where)) % k
    return fold


@dataclass
class _Head:
    weights: Matrix  # [dim, labels], applied to the raw unit embedding
    bias: Matrix
    temperature: float

    def probabilities(self, embeddings: Matrix) -> Matrix:
        return _softmax((embeddings @ self.weights + self.bias) / self.temperature)


def _train_head(
    x: Matrix, y: npt.NDArray[np.int64], n_labels: int, options: TrainOptions
) -> tuple[_Head, Matrix]:
    """The final head, and the out-of-fold probabilities it was calibrated on."""

    def fit(rows: npt.NDArray[np.bool_]) -> tuple[Matrix, Matrix]:
        # standardise on these rows, then fold the scaling into the weights
        mean, std = x[rows].mean(axis=0), x[rows].std(axis=0) + 1e-6
        w, b = _fit((x[rows] - mean) / std, y[rows], n_labels, options)
        w_raw = w / std[:, None]
        return w_raw, b - mean @ w_raw

    folds = _folds(y, options.folds, options.seed)
    oof_logits = np.zeros((len(y), n_labels))
    for k in range(options.folds):
        w, b = fit(folds != k)
        oof_logits[folds == k] = x[folds == k] @ w + b
    temperature = _fit_temperature(oof_logits, y)
    w, b = fit(np.ones(len(y), dtype=bool))
    return _Head(w, b, temperature), _softmax(oof_logits / temperature)


def _figures(probs: Matrix, y: npt.NDArray[np.int64], threshold: float) -> dict[str, float]:
    from ..evaluation.metrics import ece

    predicted = probs.argmax(axis=1)
    correct = predicted == y
    top = probs.max(axis=1)
    kept = top >= threshold
    return {
        "n": len(y),
        "accuracy": float(correct.mean()),
        "ece": float(ece(top, correct)),
        "coverage": float(kept.mean()),  # answered locally at the threshold
        "accuracy_kept": float(correct[kept].mean()) if kept.any() else math.nan,
    }


def train_specialist(
    name: str,
    examples: Sequence[Example],
    embedder: Embedder,
    store: ModelStore,
    directory: Path,
    *,
    heldout: Sequence[Example] = (),
    description: str = "",
    options: TrainOptions = TrainOptions(),
    progress: Progress = NULL_PROGRESS,
) -> SpecialistRecord:
    """Train, calibrate, export and register a specialist; returns its record."""
    check_name(name)
    labels = _check_examples(examples, heldout, options)
    index = {label: i for i, label in enumerate(labels)}
    texts = [e.text for e in examples]
    progress.start(f"embedding {len(texts) + len(heldout)} examples", len(texts) + len(heldout))
    try:
        x = _embed_all(embedder, texts, progress)
        x_held = _embed_all(embedder, [e.text for e in heldout], progress) if heldout else None
    finally:
        progress.finish()
    y = np.array([index[e.label] for e in examples], dtype=np.int64)
    head, oof = _train_head(x, y, len(labels), options)
    threshold = _pick_threshold(oof, oof.argmax(axis=1) == y, options.target_accuracy)
    metrics: dict[str, Any] = {
        "train": _figures(head.probabilities(x), y, threshold),
        "cross_validated": _figures(oof, y, threshold),
        "folds": options.folds,
        "target_accuracy": options.target_accuracy,
    }
    if x_held is not None:
        y_held = np.array([index[e.label] for e in heldout], dtype=np.int64)
        metrics["heldout"] = _figures(head.probabilities(x_held), y_held, threshold)
    head_sha, head_size = _export_head(head, store)
    record = SpecialistRecord(
        name=name,
        description=description,
        labels=labels,
        encoder=embedder.name,
        encoder_variant=embedder.variant,
        encoder_sha256=embedder.model_sha256(),
        head_sha256=head_sha,
        head_size=head_size,
        temperature=head.temperature,
        threshold=threshold,
        metrics=metrics,
        examples_sha256=_digest_examples(examples),
        trained_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    SpecialistRegistry(directory, store, embedder).save(record)
    return record


def _check_examples(
    examples: Sequence[Example], heldout: Sequence[Example], options: TrainOptions
) -> list[str]:
    """The labels, sorted, once the examples are enough to train and calibrate on."""
    counts = Counter(e.label for e in examples)
    labels = sorted(counts)
    if len(labels) < 2:
        raise InvalidRequestError(
            f"a specialist needs at least 2 labels, the examples have {labels}"
        )
    if len(labels) > MAX_LABELS:
        raise InvalidRequestError(f"{len(labels)} labels; at most {MAX_LABELS}")
    least = max(options.min_per_label, options.folds)
    few = {label: n for label, n in counts.items() if n < least}
    if few:
        raise InvalidRequestError(f"too few examples for {few}: each label needs at least {least}")
    unknown = sorted({e.label for e in heldout} - set(labels))
    if unknown:
        raise InvalidRequestError(f"held-out labels not in the training examples: {unknown}")
    return labels


def _embed_all(embedder: Embedder, texts: Sequence[str], progress: Progress) -> Matrix:
    rows = []
    for start in range(0, len(texts), 64):
        batch = texts[start : start + 64]
        rows.append(embedder.embed(batch).astype(np.float64))
        progress.advance(len(batch))
    return np.concatenate(rows) if rows else np.zeros((0, 0))


def _export_head(head: _Head, store: ModelStore) -> tuple[str, int]:
    from ridgeline_core.runtime.onnx_build import build_softmax_head

    with store.scratch("head-") as scratch:
        path = scratch / "head.onnx"
        build_softmax_head(
            head.weights.astype(np.float32),
            head.bias.astype(np.float32),
            head.temperature,
            path,
        )
        return store.add_file(path)


def _digest_examples(examples: Sequence[Example]) -> str:
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([e.text, e.label]).encode())
    return digest.hexdigest()


# -- using a specialist --------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float
    top: list[tuple[str, float]] = field(default_factory=list)  # best first


class Specialist:
    def __init__(self, record: SpecialistRecord, head_path: Path, embedder: Embedder) -> None:
        from ridgeline_core.runtime.onnx import OnnxClassifierHead

        self.record = record
        self.name = record.name
        self.labels = list(record.labels)
        self._head = OnnxClassifierHead(head_path, self.labels)
        self._embedder = embedder

    def predict(self, text: str, top: int = 3) -> Prediction:
        vector = self._embedder.embed([text])
        probs = self._head.predict_proba(vector)[0]
        order = np.argsort(-probs)[:top]
        ranked = [(self.labels[i], float(probs[i])) for i in order]
        return Prediction(ranked[0][0], ranked[0][1], ranked)

    def close(self) -> None:
        self._head.close()


class SpecialistRecords:
    """The directory of specialist records, ``<name>.json`` each."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, name: str) -> Path:
        check_name(name)
        return self.directory / f"{name}.json"

    def save(self, record: SpecialistRecord) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # not secret (labels, digests, figures): the umask decides who may read it
        atomic_write(self.path(record.name), record.model_dump_json(indent=2), mode=None)

    def names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json"))

    def get(self, name: str) -> SpecialistRecord:
        path = self.path(name)
        try:
            return SpecialistRecord.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            known = ", ".join(self.names()) or "none"
            raise UnknownModelError(
                f"unknown specialist {name!r} (trained: {known}; "
                "train one with: edge-agent specialists train NAME --examples FILE.jsonl)"
            ) from None
        except (OSError, ValidationError, ValueError) as exc:
            raise ModelError(f"specialist record {path} is unreadable: {exc}") from exc

    def remove(self, name: str) -> bool:
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            return False
        return True


class SpecialistRegistry:
    """Trained specialists: records in ``directory``, heads in the model store, each
    loaded once on first use."""

    def __init__(self, directory: Path, store: ModelStore, embedder: Embedder) -> None:
        self.directory = directory
        self._records = SpecialistRecords(directory)
        self._store = store
        self._embedder = embedder
        self._loaded: dict[str, Specialist] = {}
        self._lock = threading.Lock()

    def save(self, record: SpecialistRecord) -> None:
        self._records.save(record)
        self._unload(record.name)

    def names(self) -> list[str]:
        return self._records.names()

    def record(self, name: str) -> SpecialistRecord:
        return self._records.get(name)

    def get(self, name: str) -> Specialist:
        with self._lock:
            loaded = self._loaded.get(name)
        if loaded is not None:
            return loaded
        specialist = _load_specialist(name, self.record(name), self._store, self._embedder)
        with self._lock:
            return self._loaded.setdefault(name, specialist)

    def remove(self, name: str) -> bool:
        self._records.path(name)  # a bad name is refused before anything is unloaded
        self._unload(name)
        return self._records.remove(name)

    def _unload(self, name: str) -> None:
        with self._lock:
            old = self._loaded.pop(name, None)
        if old is not None:
            old.close()

    def close(self) -> None:
        with self._lock:
            loaded, self._loaded = list(self._loaded.values()), {}
        for specialist in loaded:
            specialist.close()


def _load_specialist(
    name: str, record: SpecialistRecord, store: ModelStore, embedder: Embedder
) -> Specialist:
    """The specialist ``name`` of ``record``, its head opened from the store (checked);
    refused when it was trained on another encoder's embeddings than ``embedder``'s."""
    current = embedder.model_sha256()
    if record.encoder != embedder.name or record.encoder_sha256 != current:
        raise ModelError(
            f"specialist {name!r} was trained on embeddings of {record.encoder} "
            f"({record.encoder_variant}); the agent now uses {embedder.name} "
            f"({embedder.variant}): train it again"
        )
    head = store.open_blob(
        record.head_sha256,
        record.head_size,
        f"specialist {name} (head)",
        f"train it again: edge-agent specialists train {name} --examples FILE.jsonl",
    )
    return Specialist(record, head, embedder)
