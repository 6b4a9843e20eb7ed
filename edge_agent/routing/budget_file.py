"""The budget's spending file, shared by every ``edge-agent`` process of a user: a small
JSON list of (time, tokens) per escalation, written durably under an flock so that
concurrent ``ask`` runs neither lose nor double-count an escalation."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from ridgeline_core.errors import ConfigError
from ridgeline_core.files import atomic_write, open_private, private_dir

__all__ = ["Spending", "SpendingFile"]

Spending = list[tuple[float, int]]  # (unix time, tokens) per escalation


class SpendingFile:
    """``path`` or, with None, nothing (the budget then counts in memory only)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._mtime: float | None = None

    def changed(self) -> bool:
        """Another process wrote the file since this one last read or wrote it."""
        if self.path is None:
            return False
        try:
            return self.path.stat().st_mtime != self._mtime
        except OSError:
            return False

    def load(self) -> Spending:
        if self.path is None or not self.path.exists():
            return []
        try:
            self._mtime = self.path.stat().st_mtime
            data = json.loads(self.path.read_text())
            return [(float(at), int(tokens)) for at, tokens in data["escalations"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"escalation budget file {self.path} is unreadable ({exc}); remove it to reset"
            ) from exc

    def save(self, spent: Spending) -> None:
        if self.path is None:
            return
        private_dir(self.path.parent)
        # durable: a torn file after a power cut would stop the agent ("remove it to reset")
        atomic_write(self.path, json.dumps({"escalations": spent}))
        self._mtime = self.path.stat().st_mtime

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise read-modify-write across processes where the OS offers flock."""
        if self.path is None:
            yield
            return
        try:
            import fcntl
        except ImportError:  # Windows: last writer wins within the same instant
            yield
            return
        private_dir(self.path.parent)
        # private: anyone who could open the lock file could hold the lock forever
        fd = open_private(self.path.with_name(f".{self.path.name}.lock"), os.O_WRONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
