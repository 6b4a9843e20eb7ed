"""Retrieved passages in the prompt, numbered, and the citations an answer makes."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ridgeline_core.runtime import ChatMessage

from .search import Passage

__all__ = ["cited", "with_passages"]

_CITATION = re.compile(r"\[(\d{1,2})\]")
INSTRUCTION = (
    "Answer the user's question using only these passages. Reply in one short sentence "
    "and cite the passage like [1]."
)


def passages_text(passages: Sequence[Passage]) -> str:
    """The passages numbered by relevance ([1] is the best), the best one last: nearest
    the question, where a small model reads it best (benchmarks/knowledge.py)."""
    numbered = list(enumerate(passages, 1))
    return "\n\n".join(
        f"[{n}] {p.heading}: {p.text}" if p.heading else f"[{n}] {p.text}"
        for n, p in reversed(numbered)
    )


def with_passages(
    messages: Sequence[ChatMessage], passages: Sequence[Passage]
) -> list[ChatMessage]:
    """The conversation with the passages in its system message (after the system prompt
    it has, if any); the user's turns stay as they were asked."""
    if not passages:
        return list(messages)
    block = f"{INSTRUCTION}\n\n{passages_text(passages)}"
    if messages and messages[0].role == "system":
        first = ChatMessage("system", f"{messages[0].content}\n\n{block}")
        return [first, *messages[1:]]
    return [ChatMessage("system", block), *messages]


def cited(text: str, count: int) -> list[int]:
    """The passage numbers (1..count) the text cites, in order of first mention."""
    seen: dict[int, None] = {}
    for match in _CITATION.finditer(text):
        number = int(match.group(1))
        if 1 <= number <= count:
            seen[number] = None
    return list(seen)
