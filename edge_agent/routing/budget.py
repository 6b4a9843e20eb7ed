"""The escalation budget: how many broker requests and tokens this device may spend per
hour and per day. Spending is kept in a small JSON file so that separate ``edge-agent ask``
processes share one budget; the file holds the last day's escalations only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ridgeline_core.errors import ConfigError
from ridgeline_core.files import atomic_write, open_private, private_dir

from ..settings import BudgetSettings
from ..telemetry.snapshot import Reading

__all__ = ["EscalationBudget"]

log = logging.getLogger(__name__)

HOUR_S = 3600.0
DAY_S = 86400.0


class EscalationBudget:
    name = "budget"

    def __init__(
        self,
        settings: BudgetSettings,
        path: Path | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._spent: list[tuple[float, int]] = self._load() if self.limited else []

    @property
    def limited(self) -> bool:
        s = self.settings
        return any(
            x is not None
            for x in (s.requests_per_hour, s.requests_per_day, s.tokens_per_hour, s.tokens_per_day)
        )

    def left(self) -> float | None:
        """Fraction left of the tightest limit, in [0, 1]; None without limits."""
        if not self.limited:
            return None
        now = self._clock()
        self._reload_if_changed()
        with self._lock:
            spent = list(self._spent)
        s = self.settings
        fractions = []
        for window, requests_limit, tokens_limit in (
            (HOUR_S, s.requests_per_hour, s.tokens_per_hour),
            (DAY_S, s.requests_per_day, s.tokens_per_day),
        ):
            recent = [tokens for at, tokens in spent if now - at < window]
            for limit, used in ((requests_limit, len(recent)), (tokens_limit, sum(recent))):
                if limit is not None:
                    fractions.append(0.0 if limit == 0 else max(0.0, 1.0 - used / limit))
        return min(fractions)

    def record(self, tokens: int) -> None:
        """Count one escalation that used ``tokens`` (prompt + completion) at the broker."""
        if not self.limited:
            return
        now = self._clock()
        entry = (now, max(0, tokens))
        with self._lock:
            try:
                with self._file_lock():
                    stored = self._load() if self.path is not None else self._spent
                    spent = [e for e in stored if now - e[0] < DAY_S] + [entry]
                    self._save(spent)
            except (OSError, ConfigError) as exc:
                # An answer that already streamed must not fail for its bookkeeping:
                # keep counting in memory and say why the file is not kept.
                log.warning("escalation budget not saved (%s); counting in memory", exc)
                spent = [e for e in self._spent if now - e[0] < DAY_S] + [entry]
            self._spent = spent

    def _reload_if_changed(self) -> None:
        """Pick up spending by other processes (``ask`` runs) that share the file."""
        if self.path is None:
            return
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return
        if mtime == self._mtime:
            return
        try:
            spent = self._load()
        except ConfigError as exc:
            log.warning("%s", exc)
            return
        with self._lock:
            self._spent = spent

    def read(self) -> Reading:
        return {"budget_left": self.left()}

    def _load(self) -> list[tuple[float, int]]:
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

    def _save(self, spent: list[tuple[float, int]]) -> None:
        if self.path is None:
            return
        private_dir(self.path.parent)
        # durable: a torn file after a power cut would stop the agent ("remove it to reset")
        atomic_write(self.path, json.dumps({"escalations": spent}))
        self._mtime = self.path.stat().st_mtime

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
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
