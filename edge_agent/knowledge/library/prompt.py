"""Retrieved passages in the prompt, numbered, and the citations an answer makes."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ridgeline_core.runtime import ChatMessage

from .search import Passage

__all__ = ["cited", "with_passages"]

_CITATION = re.compile(r"\[(\d{1,2})\]")
INSTRUCTION = (
    "Answer the question from the passages below, briefly. After the answer, cite the "
    "passage it comes from, like [1]. If the passages do not hold the answer, say you "
    "do not know."
)


def passages_text(passages: Sequence[Passage]) -> str:
    return "\n\n".join(
        f"[{n}] {p.heading}: {p.text}" if p.heading else f"[{n}] {p.text}"
        for n, p in enumerate(passages, 1)
    )


def with_passages(
    messages: Sequence[ChatMessage], passages: Sequence[Passage]
) -> list[ChatMessage]:
    """The conversation with the passages in its last user message, which ends with the
    question as it was asked."""
    if not passages:
        return list(messages)
    last = max(i for i, m in enumerate(messages) if m.role == "user")
    question = messages[last].content
    content = f"{INSTRUCTION}\n\n{passages_text(passages)}\n\nQuestion: {question}"
    return [*messages[:last], ChatMessage("user", content), *messages[last + 1 :]]


def cited(text: str, count: int) -> list[int]:
    """The passage numbers (1..count) the text cites, in order of first mention."""
    seen: dict[int, None] = {}
    for match in _CITATION.finditer(text):
        number = int(match.group(1))
        if 1 <= number <= count:
            seen[number] = None
    return list(seen)
