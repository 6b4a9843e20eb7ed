"""The escalation budget: how many broker requests and tokens this device may spend per
hour and per day. Spending is kept in a small JSON file so that separate ``edge-agent ask``
processes share one budget; the file holds the last day's escalations only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ridgeline_core.errors import ConfigError

from ..settings import BudgetSettings
from ..telemetry.snapshot import Reading
from .budget_file import Spending, SpendingFile

__all__ = ["EscalationBudget"]

log = logging.getLogger(__name__)

HOUR_S = 3600.0
DAY_S = 86400.0


class EscalationBudget:
    """Requests and tokens spent at the broker, against hourly and daily limits."""

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
        self._file = SpendingFile(path)
        self._spent: Spending = self._file.load() if self.limited else []

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
        return fraction_left(self.settings, spent, now)

    def record(self, tokens: int) -> None:
        """Count one escalation that used ``tokens`` (prompt + completion) at the broker."""
        if not self.limited:
            return
        now = self._clock()
        entry = (now, max(0, tokens))
        with self._lock:
            try:
                with self._file.locked():
                    stored = self._file.load() if self.path is not None else self._spent
                    spent = [e for e in stored if now - e[0] < DAY_S] + [entry]
                    self._file.save(spent)
            except (OSError, ConfigError) as exc:
                # An answer that already streamed must not fail for its bookkeeping:
                # keep counting in memory and say why the file is not kept.
                log.warning("escalation budget not saved (%s); counting in memory", exc)
                spent = [e for e in self._spent if now - e[0] < DAY_S] + [entry]
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

    def read(self) -> Reading:
        return {"budget_left": self.left()}


def fraction_left(settings: BudgetSettings, spent: Spending, now: float) -> float:
    """Fraction left of the tightest limit, in [0, 1] (some limit is set)."""
    s = settings
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
