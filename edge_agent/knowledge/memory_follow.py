"""The outcome memory's rows kept in step with its JSONL file: the file read on first use and
followed after that, new outcomes recorded in both, and prompts embedded in batches."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..settings import MemorySettings
from .memory_log import OutcomeLog
from .memory_outcome import EmbedFn, Outcome, Vectors
from .memory_rows import OutcomeRows

__all__ = ["EMBED_BATCH", "FollowedRows", "embed_in_batches"]

EMBED_BATCH = 64  # prompts embedded at once when the file is read


class FollowedRows:
    """The rows in memory, kept in step with the log file: read on first use, then each
    time before use, what other processes appended (or everything, after a rewrite).
    ``path`` None keeps the rows in this process only. Not locked: the memory locks."""

    def __init__(self, settings: MemorySettings, embed: EmbedFn, path: Path | None) -> None:
        self.settings = settings
        self._embed = embed
        self.loaded = path is None  # an in-process memory has nothing to read
        self.rows = OutcomeRows(settings.max_entries)
        self._log = None if path is None else OutcomeLog(path, settings.max_entries)

    def refresh(self) -> OutcomeRows:
        """Read the file on first use; after that, pick up what others appended."""
        log_file = self._log
        if log_file is not None:
            change = log_file.change() if self.loaded else "reload"
            if change == "reload":
                self.rows = OutcomeRows(self.settings.max_entries)
                self._insert(log_file.reload())
                self.loaded = True
                self._compact(log_file)
            elif change == "more":
                self._insert(log_file.read_more())
        return self.rows

    def record(self, outcomes: Sequence[Outcome], vectors: npt.ArrayLike | None) -> None:
        """Add ``outcomes`` to the rows (once the file has been read) and to the file."""
        if self.loaded:
            self.refresh()
            rows = (
                self._embed_all([o.prompt for o in outcomes])
                if vectors is None
                else np.asarray(vectors, dtype=np.float32).reshape(len(outcomes), -1)
            )
            self.rows.insert(outcomes, rows)
        if self._log is not None:
            self._log.append(outcomes, self.loaded)
            if self.loaded:
                self._compact(self._log)

    def _compact(self, log_file: OutcomeLog) -> None:
        """Rewrite the file with the rows held once it has too many stale lines."""
        if log_file.stale_lines(len(self.rows.outcomes)) > 0:
            log_file.rewrite(self.rows.outcomes)

    def _insert(self, outcomes: list[Outcome]) -> None:
        if outcomes:
            self.rows.insert(outcomes, self._embed_all([o.prompt for o in outcomes]))

    def _embed_all(self, prompts: Sequence[str]) -> Vectors:
        return embed_in_batches(self._embed, prompts)


def embed_in_batches(embed: EmbedFn, prompts: Sequence[str]) -> Vectors:
    """``embed`` over ``prompts``, EMBED_BATCH at a time (bounded memory for a big file)."""
    parts = [
        np.asarray(embed(prompts[i : i + EMBED_BATCH]), dtype=np.float32)
        for i in range(0, len(prompts), EMBED_BATCH)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
