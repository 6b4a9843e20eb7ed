"""The spending this process knows of: an in-memory copy of the shared spending file,
pruned to the last day, refreshed when other processes write the file, and still counting
(in memory) when the file cannot be written."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

from ridgeline_core.errors import ConfigError

from .budget_file import FUTURE_TOLERANCE_S, Spending, SpendingFile

__all__ = ["DAY_S", "SharedSpending"]

# The budget's warnings keep the logger they have always had.
log = logging.getLogger("edge_agent.routing.budget")

DAY_S = 86400.0


class SharedSpending:
    """Escalations of the last day as (time, tokens), shared through ``file``."""

    def __init__(self, file: SpendingFile, *, load: bool, now: Callable[[], float]) -> None:
        self._file = file
        self._lock = threading.Lock()
        self._spent: Spending = file.load(now()) if load else []

    def current(self, now: float) -> Spending:
        """A copy of the spending, with what other processes wrote since the last look."""
        self._reload_if_changed(now)
        with self._lock:
            spent = self._spent
        if any(at > now + FUTURE_TOLERANCE_S for at, _ in spent):
            spent = self._clock_went_back(now)
        return list(spent)

    def add(self, at: float, tokens: int) -> None:
        """Count one escalation at ``at`` in the file (under its lock) and in memory."""
        entry = (at, tokens)
        with self._lock:
            try:
                with self._file.locked():
                    stored = self._file.load_locked(at) if self._file.path else self._spent
                    spent = [e for e in stored if at - e[0] < DAY_S] + [entry]
                    self._file.save(spent)
            except (OSError, ConfigError) as exc:
                # An answer that already streamed must not fail for its bookkeeping:
                # keep counting in memory and say why the file is not kept.
                log.warning("escalation budget not saved (%s); counting in memory", exc)
                spent = [e for e in self._spent if at - e[0] < DAY_S] + [entry]
            self._spent = spent

    def _reload_if_changed(self, now: float) -> None:
        """Pick up spending by other processes (``ask`` runs) that share the file."""
        if not self._file.changed():
            return
        try:
            spent = self._file.load(now)
        except ConfigError as exc:
            log.warning("%s", exc)
            return
        with self._lock:
            self._spent = spent

    def _clock_went_back(self, now: float) -> Spending:
        """Entries ahead of ``now``: the clock was set back while this process ran. They
        count from now, in the file too (repaired on loading), so every process agrees."""
        spent = self._spent
        if self._file.path is not None:
            with contextlib.suppress(ConfigError):  # unreadable now: keep what is known
                spent = self._file.load(now)
        ahead = [e for e in spent if e[0] > now + FUTURE_TOLERANCE_S]
        if ahead:  # known in memory only (no file, or one that could not be written)
            log.warning(
                "escalation budget: %d entries dated in the future count from now "
                "(clock set back?)", len(ahead),
            )  # fmt: skip
            spent = [(min(at, now), tokens) for at, tokens in spent]
        with self._lock:
            self._spent = spent
        return spent
