"""Progress reporting for long work (pulls, hashing), independent of any UI."""

from __future__ import annotations

from typing import Protocol

__all__ = ["NULL_PROGRESS", "NullProgress", "Progress"]


class Progress(Protocol):
    def start(self, description: str, total: int | None) -> None:
        """A new phase begins; ``total`` is in bytes when known."""

    def advance(self, amount: int) -> None:
        """``amount`` more bytes of the current phase are done."""

    def finish(self) -> None:
        """The current phase is over."""


class NullProgress:
    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass

    def finish(self) -> None:
        pass


NULL_PROGRESS = NullProgress()
