"""What a request yields as it runs: text, a reset, the routing decision, the answer.

The pipeline (:mod:`.pipeline`) is a generator of these; ``ask`` keeps the last one,
streaming callers (SSE, the gRPC edge service, the SDK's ``stream``) forward them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..decision import Path
from .answer import Answer

__all__ = ["Decided", "Done", "Event", "Reset", "TextChunk", "answer_of"]


@dataclass(frozen=True)
class TextChunk:
    """More of the answer's text."""

    text: str


@dataclass(frozen=True)
class Reset:
    """The broker failed mid-answer: drop the text streamed so far; the local answer
    follows."""

    reason: str


@dataclass(frozen=True)
class Decided:
    """The route is chosen: the answer comes from ``path`` (for an escalation, the path it
    takes if the broker answers), for ``reason``. Text that follows belongs to it; text of
    a final local answer may have streamed before it."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Done:
    """The end of the stream: the whole answer with its decision record."""

    answer: Answer


Event = TextChunk | Reset | Decided | Done


def answer_of(
    events: Iterable[Event],
    on_text: Callable[[str], None] | None = None,
    on_reset: Callable[[str], None] | None = None,
) -> Answer:
    """Drain ``events`` to the answer, handing text and resets to the callbacks."""
    for event in events:
        if isinstance(event, TextChunk) and on_text is not None:
            on_text(event.text)
        elif isinstance(event, Reset) and on_reset is not None:
            on_reset(event.reason)
        elif isinstance(event, Done):
            return event.answer
    raise RuntimeError("the pipeline ended without an answer")
