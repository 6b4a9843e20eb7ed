"""Blocks grouped into chunks of at most ``max_chars``, each under its heading path.

A chunk never spans two sections: a new heading ends the chunk before it, so a passage
the model reads is about one thing, and its heading ("Leave > Annual leave") says what.
Paragraphs are kept whole when they fit; a longer one is cut at sentence ends (or, with
no sentence end in reach, at a space).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .sources import Block

__all__ = ["Chunk", "chunk_blocks"]

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


@dataclass(frozen=True)
class Chunk:
    heading: str  # the heading path, "Title > Section"; empty before the first heading
    text: str

    def embedded_text(self) -> str:
        """What the encoder reads: the heading gives a short passage its subject."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text


def chunk_blocks(blocks: Iterable[Block], max_chars: int) -> list[Chunk]:
    chunks: list[Chunk] = []
    path: list[tuple[int, str]] = []
    body: list[str] = []

    def flush() -> None:
        if body:
            heading = " > ".join(text for _, text in path)
            chunks.extend(Chunk(heading, text) for text in _pack(body, max_chars))
            body.clear()

    for block in blocks:
        if block.level:
            flush()
            path[:] = [(level, text) for level, text in path if level < block.level]
            path.append((block.level, block.text))
        else:
            body.append(block.text)
    flush()
    return chunks


def _pack(paragraphs: list[str], max_chars: int) -> Iterator[str]:
    """Paragraphs joined with newlines into pieces of at most ``max_chars``."""
    current = ""
    for paragraph in paragraphs:
        for piece in _pieces(paragraph, max_chars):
            if current and len(current) + 1 + len(piece) > max_chars:
                yield current
                current = piece
            else:
                current = f"{current}\n{piece}" if current else piece
    if current:
        yield current


def _pieces(paragraph: str, max_chars: int) -> Iterator[str]:
    """The paragraph, or its sentences packed up to ``max_chars`` when it is longer."""
    if len(paragraph) <= max_chars:
        yield paragraph
        return
    current = ""
    for sentence in _SENTENCE_END.split(paragraph):
        for part in _hard_split(sentence, max_chars):
            if current and len(current) + 1 + len(part) > max_chars:
                yield current
                current = part
            else:
                current = f"{current} {part}" if current else part
    if current:
        yield current


def _hard_split(text: str, max_chars: int) -> Iterator[str]:
    while len(text) > max_chars:
        cut = text.rfind(" ", 0, max_chars + 1)
        cut = cut if cut > max_chars // 2 else max_chars
        yield text[:cut].rstrip()
        text = text[cut:].lstrip()
    if text:
        yield text
