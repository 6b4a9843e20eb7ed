"""Outcome memory: past prompts whose local answers were judged right or wrong, per model,
and a k-nearest-neighbour estimate of P(right) for a new prompt from the most similar ones.

Outcomes come from calibration data (``edge-agent calibrate --remember``) and from feedback
(``EdgeAgent.feedback``, ``edge-agent feedback``). The pre-route reads the estimate
(edge_agent.routing.preroute).

The estimate for a prompt with unit embedding ``v``, over the model's outcomes ``i`` with
unit embeddings ``u_i`` and outcomes ``y_i`` (1 right, 0 wrong)::

    s_i  = u_i · v                                   (cosine similarity)
    w_i  = clip((s_i - s0) / (1 - s0), 0, 1)         for the k most similar, else 0
    base = (R + 1) / (N + 2)                         (the model's base rate, Laplace)
    P    = (Σ w_i y_i + prior · base) / (Σ w_i + prior)

``s0`` is ``min_similarity``: a past prompt less similar than that says nothing. ``prior``
pseudo-neighbours sit at the base rate, so few or far neighbours (small ``Σ w_i``, the
estimate's ``support``) leave P near the base rate, and many close ones move it to their
own rate. Below ``min_outcomes`` outcomes a model has no estimate.

Storage: a JSONL file, one outcome a line (prompt, model, right, source, time), appended to
as outcomes arrive; the newest outcome of a (model, prompt) replaces older ones, and beyond
``max_entries`` the oldest go (the file is rewritten when it holds too many stale lines).
The embeddings live only in memory: they are recomputed when the file is first read, in
batches (a few hundred prompts take about a second). Not caching them keeps the file
independent of the embedding model: change ``embeddings.model`` or its variant and the
memory still holds, no stale vectors can be mixed with new ones, and there is no second
file to keep in step. The file is read lazily, on the first estimate, and followed after
that: lines another process appends (``edge-agent feedback`` beside a running daemon) are
picked up at the next estimate.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from ridgeline_core.errors import InvalidRequestError, StoreError
from ridgeline_core.files import atomic_write, private_append, private_dir

from ..settings import MemorySettings
from .vectors import VectorIndex

__all__ = ["EmbedFn", "MemoryEstimate", "Outcome", "OutcomeMemory", "Source", "Vectors"]

log = logging.getLogger(__name__)

Source = Literal["calibration", "feedback"]
Vectors = npt.NDArray[np.float32]
EmbedFn = Callable[[Sequence[str]], Vectors]

EMBED_BATCH = 64  # prompts embedded at once when the file is read


@dataclass(frozen=True)
class Outcome:
    """One judged local answer."""

    prompt: str
    model: str
    right: bool
    source: Source
    time: float  # Unix seconds

    @classmethod
    def from_json(cls, data: Any) -> Outcome:
        if not isinstance(data, dict):
            raise ValueError("not an object")
        prompt, model, right = data.get("prompt"), data.get("model"), data.get("right")
        source, at = data.get("source", "feedback"), data.get("time", 0.0)
        if not isinstance(prompt, str) or not prompt or not isinstance(model, str) or not model:
            raise ValueError("prompt and model must be non-empty strings")
        if not isinstance(right, bool):
            raise ValueError("right must be true or false")
        if source not in get_args(Source):
            raise ValueError(f"source {source!r} is not one of {get_args(Source)}")
        if not isinstance(at, (int, float)) or isinstance(at, bool):
            raise ValueError("time must be a number")
        return cls(prompt, model, right, source, float(at))


@dataclass(frozen=True)
class MemoryEstimate:
    """The memory's P(right) for one prompt, and what it rests on."""

    probability: float  # P(right), shrunk toward base_rate
    base_rate: float  # the model's (Laplace-smoothed) rate of right answers
    support: float  # Σ w_i: how many neighbours' worth of evidence (0: none)
    max_similarity: float  # cosine similarity of the nearest past prompt
    neighbours: int  # past prompts with a weight > 0
    outcomes: int  # the model's outcomes in the memory

    def describe(self) -> str:
        return (
            f"memory {self.probability:.2f} from {self.neighbours} similar prompts "
            f"(support {self.support:.1f}, nearest {self.max_similarity:.2f}, "
            f"base rate {self.base_rate:.2f} of {self.outcomes})"
        )


class OutcomeMemory:
    """Judged outcomes of a model's local answers, with their prompts' embeddings.

    ``embed`` turns prompts into unit rows (``Embedder.embed``); it is called only when the
    file is read and for outcomes added without a vector. ``path`` None keeps the memory
    in this process only. Thread-safe.
    """

    def __init__(self, settings: MemorySettings, embed: EmbedFn, path: Path | None) -> None:
        self.settings = settings
        self.path = path
        self._embed = embed
        self._lock = threading.RLock()
        self._loaded = path is None  # an in-process memory has nothing to read
        self._rows = OutcomeRows(settings.max_entries)
        self._log = None if path is None else OutcomeLog(path, settings.max_entries)

    def estimate(self, model: str, vector: npt.ArrayLike) -> MemoryEstimate | None:
        """P(right) of ``model``'s answer to the prompt embedded as ``vector`` (see the
        module docstring); None while the model has fewer than ``min_outcomes``."""
        with self._lock:
            self._refresh()
            return self._rows.estimate(model, vector, self.settings)

    def size(self, model: str | None = None) -> int:
        """Outcomes held for ``model`` (all models: None)."""
        with self._lock:
            self._refresh()
            return self._rows.size(model)

    def outcomes(self) -> list[Outcome]:
        """Every outcome held, oldest first."""
        with self._lock:
            self._refresh()
            return list(self._rows.outcomes)

    def add(
        self,
        model: str,
        prompt: str,
        right: bool,
        source: Source,
        vector: npt.ArrayLike | None = None,
    ) -> Outcome:
        """Record one judged answer (``vector``: the prompt's embedding, if already made)."""
        outcome = Outcome(prompt, model, bool(right), source, time.time())
        vectors = None if vector is None else np.asarray(vector, dtype=np.float32).reshape(1, -1)
        self.extend([outcome], vectors)
        return outcome

    def extend(self, outcomes: Sequence[Outcome], vectors: npt.ArrayLike | None = None) -> None:
        """Record many judged answers at once (one file write, batched embedding).

        When the file has not been read yet, the outcomes are only appended to it: nothing
        is embedded until an estimate needs the memory."""
        if not outcomes:
            return
        _check_outcomes(outcomes)
        with self._lock:
            if self._loaded:
                self._refresh()
                rows = (
                    self._embed_all([o.prompt for o in outcomes])
                    if vectors is None
                    else np.asarray(vectors, dtype=np.float32).reshape(len(outcomes), -1)
                )
                self._rows.insert(outcomes, rows)
            if self._log is not None:
                self._log.append(outcomes, self._loaded)
                if self._loaded and self._log.stale_lines(len(self._rows.outcomes)) > 0:
                    self._log.rewrite(self._rows.outcomes)

    def _refresh(self) -> None:
        """Read the file on first use; after that, pick up what others appended."""
        log_file = self._log
        if log_file is None:
            return
        change = log_file.change() if self._loaded else "reload"
        if change == "reload":
            self._rows = OutcomeRows(self.settings.max_entries)
            self._insert(log_file.reload())
            self._loaded = True
            if log_file.stale_lines(len(self._rows.outcomes)) > 0:
                log_file.rewrite(self._rows.outcomes)
        elif change == "more":
            self._insert(log_file.read_more())

    def _insert(self, outcomes: list[Outcome]) -> None:
        if outcomes:
            self._rows.insert(outcomes, self._embed_all([o.prompt for o in outcomes]))

    def _embed_all(self, prompts: Sequence[str]) -> Vectors:
        parts = [
            np.asarray(self._embed(prompts[i : i + EMBED_BATCH]), dtype=np.float32)
            for i in range(0, len(prompts), EMBED_BATCH)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def _check_outcomes(outcomes: Sequence[Outcome]) -> None:
    for outcome in outcomes:
        if outcome.source not in get_args(Source):
            raise InvalidRequestError(f"source {outcome.source!r} is not one of {get_args(Source)}")
        if not outcome.prompt or not outcome.model:
            raise InvalidRequestError("an outcome needs a prompt and a model")


class OutcomeRows:
    """The outcomes held in memory: one row each, with its prompt's unit vector, whether it
    was right and its model; the newest judgement of a (model, prompt) replaces older ones,
    and beyond ``max_entries`` the oldest go."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.outcomes: list[Outcome] = []
        self._index: dict[tuple[str, str], int] = {}  # (model, prompt) -> row
        self._vectors = _empty_index(0)  # row i: outcome i's prompt, "right", model id
        self._models: dict[str, int] = {}

    def size(self, model: str | None) -> int:
        if model is None:
            return len(self.outcomes)
        model_id = self._models.get(model)
        return 0 if model_id is None else int((self._vectors.field("model") == model_id).sum())

    def estimate(
        self, model: str, vector: npt.ArrayLike, s: MemorySettings
    ) -> MemoryEstimate | None:
        model_id = self._models.get(model)
        if model_id is None or not self.outcomes:
            return None
        mine = self._vectors.field("model") == model_id
        count = int(mine.sum())
        if count < s.min_outcomes:
            return None
        v = _unit(np.asarray(vector, dtype=np.float32).reshape(-1))
        if v.shape[0] != self._vectors.dim:
            raise InvalidRequestError(
                f"vector has {v.shape[0]} dimensions; the memory's have {self._vectors.dim}"
            )
        rights = int(self._vectors.field("right")[mine].sum())
        rows, similarity = self._vectors.nearest(v, s.k, where=mine)
        right = self._vectors.field("right")[rows]
        base = (rights + 1) / (count + 2)
        weight = np.clip((similarity - s.min_similarity) / (1 - s.min_similarity), 0.0, 1.0)
        support = float(weight.sum())
        return MemoryEstimate(
            probability=(float(weight @ right) + s.prior * base) / (support + s.prior),
            base_rate=base,
            support=support,
            max_similarity=float(similarity.max()),
            neighbours=int((weight > 0).sum()),
            outcomes=count,
        )

    def insert(self, outcomes: Sequence[Outcome], vectors: Vectors) -> None:
        if vectors.ndim != 2 or vectors.shape[0] != len(outcomes):
            raise InvalidRequestError(
                f"{len(outcomes)} outcomes need as many vectors, got shape {vectors.shape}"
            )
        vectors = _unit_rows(vectors)
        stale = {self._index[key] for o in outcomes if (key := (o.model, o.prompt)) in self._index}
        if stale:
            self._drop(sorted(stale))
        if self._vectors.dim != vectors.shape[1]:
            if self.outcomes:
                raise InvalidRequestError(
                    f"vectors have {vectors.shape[1]} dimensions; the memory's have "
                    f"{self._vectors.dim}"
                )
            self._vectors = _empty_index(vectors.shape[1])
        start = self._vectors.append(vectors)
        right, model_ids = self._vectors.field("right"), self._vectors.field("model")
        for row, o in enumerate(outcomes, start):
            right[row] = o.right
            model_ids[row] = self._models.setdefault(o.model, len(self._models))
            self._index[(o.model, o.prompt)] = row
        self.outcomes.extend(outcomes)
        over = len(self.outcomes) - self.max_entries
        if over > 0:
            self._drop(list(range(over)))

    def _drop(self, rows: list[int]) -> None:
        """Remove ``rows`` (ascending), keeping the order of the rest."""
        keep = np.ones(len(self.outcomes), dtype=bool)
        keep[rows] = False
        self._vectors.keep(keep)
        self.outcomes = [o for o, k in zip(self.outcomes, keep, strict=True) if k]
        self._index = {(o.model, o.prompt): i for i, o in enumerate(self.outcomes)}


class OutcomeLog:
    """The memory's JSONL file, followed as it grows: what was read of it (its identity, the
    bytes read, its lines), appends, and atomic rewrites when it holds too many stale
    lines."""

    def __init__(self, path: Path, max_entries: int) -> None:
        self.path, self.max_entries = path, max_entries
        self._file_id: tuple[int, int] | None = None  # (device, inode) read
        self._offset = 0  # bytes of the file read
        self._file_lines = 0  # lines in the file (stale ones included)

    def change(self) -> Literal["reload", "more"] | None:
        """How the file changed since it was read: rewritten, grown, or not at all."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        if (stat.st_dev, stat.st_ino) != self._file_id or stat.st_size < self._offset:
            return "reload"  # rewritten by another process
        return "more" if stat.st_size > self._offset else None

    def reload(self) -> list[Outcome]:
        self._offset = self._file_lines = 0
        self._file_id = None
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        self._file_id = (stat.st_dev, stat.st_ino)
        return self.read_more()

    def read_more(self) -> list[Outcome]:
        """The outcomes of the complete lines past what was read (the newest of each)."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except OSError as exc:
            raise StoreError(f"cannot read the outcome memory {self.path}: {exc}") from exc
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        lines = data[:end].splitlines()
        self._offset += end
        self._file_lines += len(lines)
        return _parse(lines, self.path)[-self.max_entries :]

    def append(self, outcomes: Sequence[Outcome], loaded: bool) -> None:
        data = _jsonl(outcomes)
        try:
            # past prompts can be sensitive: only this user reads them
            private_dir(self.path.parent)
            with private_append(self.path) as handle:
                start = handle.tell()
                handle.write(data)
                stat = os.fstat(handle.fileno())
        except OSError as exc:
            raise StoreError(f"cannot write the outcome memory {self.path}: {exc}") from exc
        if loaded and start == self._offset and self._file_id in (None, _id(stat)):
            # Nobody wrote in between: these lines are already in memory.
            self._offset = start + len(data)
            self._file_lines += len(outcomes)
            self._file_id = _id(stat)

    def stale_lines(self, held: int) -> int:
        """Lines of the file beyond what it needs, once that is worth a rewrite."""
        excess = self._file_lines - held
        return excess if excess > max(64, self.max_entries // 4) else 0

    def rewrite(self, outcomes: Sequence[Outcome]) -> None:
        """Rewrite the file with ``outcomes`` (atomically: a reader sees old or new)."""
        data = _jsonl(outcomes)
        try:
            atomic_write(self.path, data)
            stat = self.path.stat()
        except OSError as exc:
            raise StoreError(f"cannot rewrite the outcome memory {self.path}: {exc}") from exc
        self._file_id, self._offset = _id(stat), len(data)
        self._file_lines = len(outcomes)


def _parse(lines: list[bytes], path: Path) -> list[Outcome]:
    new: dict[tuple[str, str], Outcome] = {}
    bad = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            outcome = Outcome.from_json(json.loads(line))
        except ValueError:
            bad += 1
            continue
        new.pop((outcome.model, outcome.prompt), None)
        new[(outcome.model, outcome.prompt)] = outcome  # the newest judgement counts
    if bad:
        log.warning("outcome memory %s: skipped %d malformed lines", path, bad)
    return list(new.values())


def _jsonl(outcomes: Sequence[Outcome]) -> bytes:
    return b"".join(json.dumps(asdict(o), ensure_ascii=False).encode() + b"\n" for o in outcomes)


def _id(stat: os.stat_result) -> tuple[int, int]:
    return stat.st_dev, stat.st_ino


def _empty_index(dim: int) -> VectorIndex:
    return VectorIndex(dim, (("right", np.bool_), ("model", np.int32)))


def _unit(v: Vectors) -> Vectors:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 and math.isfinite(norm) else v


def _unit_rows(vectors: Vectors) -> Vectors:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.where(norms > 0, vectors / np.where(norms > 0, norms, 1), vectors).astype(np.float32)
