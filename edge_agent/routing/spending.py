"""The spending this process knows of: an in-memory copy of the shared spending file,
pruned to the last day, refreshed when other processes write the file, and still counting
(in memory) when the file cannot be written."""

from __future__ import annotations

import logging
import threading

from ridgeline_core.errors import ConfigError

from .budget_file import Spending, SpendingFile

__all__ = ["DAY_S", "SharedSpending"]

# The budget's warnings keep the logger they have always had.
log = logging.getLogger("edge_agent.routing.budget")

DAY_S = 86400.0


class SharedSpending:
    """Escalations of the last day as (time, tokens), shared through ``file``."""

    def __init__(self, file: SpendingFile, *, load: bool) -> None:
        self._file = file
        self._lock = threading.Lock()
        self._spent: Spending = file.load() if load else []

    def current(self) -> Spending:
        """A copy of the spending, with what other processes wrote since the last look."""
        self._reload_if_changed()
        with self._lock:
            return list(self._spent)

    def add(self, at: float, tokens: int) -> None:
        """Count one escalation at ``at`` in the file (under its lock) and in memory."""
        entry = (at, tokens)
        with self._lock:
            try:
                with self._file.locked():
                    stored = self._file.load() if self._file.path is not None else self._spent
                    spent = [e for e in stored if at - e[0] < DAY_S] + [entry]
                    self._file.save(spent)
            except (OSError, ConfigError) as exc:
                # An answer that already streamed must not fail for its bookkeeping:
                # keep counting in memory and say why the file is not kept.
                log.warning("escalation budget not saved (%s); counting in memory", exc)
                spent = [e for e in self._spent if at - e[0] < DAY_S] + [entry]
            self._spent = spent

    def _reload_if_changed(self) -> None:
        """Pick up spending by other processes (``ask`` runs) that share the file."""
        if not self._file.changed():
            return
        try:
            spent = self._file.load()
        except ConfigError as exc:
            log.warning("%s", exc)
            return
        with self._lock:
            self._spent = spent
