"""The budget's spending file, shared by every ``edge-agent`` process of a user: a small
JSON list of (time, tokens) per escalation, written durably under an flock so that
concurrent ``ask`` runs neither lose nor double-count an escalation.

A state file must not stop the agent. A file that is not a spending file (not JSON, no
list of escalations) is moved aside to ``budget.json.corrupt-<UTC time>`` and spending
starts again from nothing; entries that are not a finite time and a whole, non-negative
token count are dropped; entries dated ahead of the clock (it went back) count from now,
so they age out instead of reading as spent until the clock gets there. Each repair is
written back under the lock, with one warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ridgeline_core.errors import ConfigError
from ridgeline_core.files import atomic_write, move_aside, open_private, private_dir

__all__ = ["FUTURE_TOLERANCE_S", "Spending", "SpendingFile", "read_spending"]

# The budget's warnings keep the logger they have always had.
log = logging.getLogger("edge_agent.routing.budget")

Spending = list[tuple[float, int]]  # (unix time, tokens) per escalation
FUTURE_TOLERANCE_S = 60.0  # an entry this far ahead of the clock is still taken as it is
_MAX_TOKENS = 2**53  # more than any escalation: a count beyond is not a count


@dataclass(frozen=True)
class SpendingRead:
    """A spending file's valid entries, and what was wrong with it (None: nothing)."""

    spent: Spending
    problem: str | None = None
    corrupt: bool = False  # not a spending file at all: it is moved aside


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

    def load(self, now: float) -> Spending:
        """The file's valid entries (see the module docstring); a file that needs a repair
        is read again and repaired under the lock. ConfigError when it cannot be read."""
        read = self._read(now)
        if read.problem is None:
            return read.spent
        try:
            with self.locked():
                return self.load_locked(now)
        except OSError as exc:
            log.warning("budget file %s: %s (not repaired: %s)", self.path, read.problem, exc)
            return read.spent

    def load_locked(self, now: float) -> Spending:
        """:meth:`load` for a caller that holds the lock."""
        read = self._read(now)
        if read.problem is None or self.path is None:
            return read.spent
        if not read.corrupt:
            self.save(read.spent)
            log.warning("escalation budget file %s: %s", self.path, read.problem)
            return read.spent
        aside = move_aside(self.path)
        log.warning(
            "escalation budget file %s is %s: moved it to %s; spending counts from nothing "
            "again", self.path, read.problem, aside.name,
        )  # fmt: skip
        return read.spent

    def _read(self, now: float) -> SpendingRead:
        if self.path is None:
            return SpendingRead([])
        try:
            self._mtime = self.path.stat().st_mtime
            data = self.path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return SpendingRead([])
        except OSError as exc:
            raise ConfigError(
                f"escalation budget file {self.path} is unreadable ({exc}); remove it to reset"
            ) from exc
        return read_spending(data, now)

    def save(self, spent: Spending) -> None:
        if self.path is None:
            return
        private_dir(self.path.parent)
        # durable: a torn file after a power cut would lose the spending it kept
        atomic_write(self.path, json.dumps({"escalations": spent}))
        self._mtime = self.path.stat().st_mtime

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """Serialise read-modify-write across processes where the OS offers flock."""
        return _flocked(self.path)


@contextlib.contextmanager
def _flocked(path: Path | None) -> Iterator[None]:
    """The lock beside ``path`` held (nothing to hold without a path or without flock)."""
    if path is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # Windows: last writer wins within the same instant
        yield
        return
    private_dir(path.parent)
    # private: anyone who could open the lock file could hold the lock forever
    fd = open_private(path.with_name(f".{path.name}.lock"), os.O_WRONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def read_spending(data: bytes | str, now: float) -> SpendingRead:
    """A spending file's content read at time ``now``: its valid entries, entries ahead of
    ``now`` (beyond :data:`FUTURE_TOLERANCE_S`) moved to ``now``, and what was wrong."""
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError) as exc:
        return SpendingRead([], f"not JSON ({exc})", corrupt=True)
    entries = parsed.get("escalations") if isinstance(parsed, dict) else None
    if not isinstance(entries, list):
        return SpendingRead([], "not a spending file (no list of escalations)", corrupt=True)
    spent: Spending = []
    dropped = ahead = 0
    for entry in entries:
        valid = _entry(entry)
        if valid is None:
            dropped += 1
            continue
        at, tokens = valid
        if at > now + FUTURE_TOLERANCE_S:
            at, ahead = now, ahead + 1
        spent.append((at, tokens))
    problems = []
    if dropped:
        problems.append(f"dropped {dropped} invalid entries (not a finite time and tokens)")
    if ahead:
        problems.append(f"{ahead} entries dated in the future count from now (clock set back?)")
    return SpendingRead(spent, "; ".join(problems) or None)


def _entry(entry: Any) -> tuple[float, int] | None:
    """``[time, tokens]`` as (seconds, tokens); None unless a finite time and a whole
    token count in [0, 2**53]."""
    if not isinstance(entry, list) or len(entry) != 2:
        return None
    at, tokens = entry
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in entry):
        return None
    try:
        at_s, tokens_f = float(at), float(tokens)
    except OverflowError:  # an integer beyond float range
        return None
    if not (math.isfinite(at_s) and tokens_f.is_integer() and 0 <= tokens_f <= _MAX_TOKENS):
        return None
    return at_s, int(tokens)
