"""The escalation budget: how many broker requests and tokens this device may spend per
hour and per day. Spending is kept in a small JSON file so that separate ``edge-agent ask``
processes share one budget; the file holds the last day's escalations only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from ..settings import BudgetSettings
from ..telemetry.snapshot import Reading
from .budget_file import Spending, SpendingFile
from .spending import DAY_S, SharedSpending

__all__ = ["EscalationBudget"]

HOUR_S = 3600.0


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
        self._spending = SharedSpending(SpendingFile(path), load=self.limited, now=clock)

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
        return fraction_left(self.settings, self._spending.current(now), now)

    def record(self, tokens: int) -> None:
        """Count one escalation that used ``tokens`` (prompt + completion) at the broker."""
        if not self.limited:
            return
        self._spending.add(self._clock(), max(0, tokens))

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
