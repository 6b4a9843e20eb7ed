"""Source files read into blocks of text: Markdown, plain text, HTML and PDF (:mod:`.pdf`).

A block is a heading or a paragraph (a list item, a table row); :mod:`.chunking` groups
them into chunks under their headings. Every problem with a file (missing, unreadable,
too large, not UTF-8, a kind we do not read) is an :class:`InvalidRequestError` naming
the file, raised before anything is stored.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Literal

from ridgeline_core.errors import InvalidRequestError

__all__ = ["SUFFIXES", "Block", "SourceText", "find_sources", "read_source"]

Kind = Literal["markdown", "text", "html", "pdf"]
SUFFIXES: dict[str, Kind] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".rst": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",  # its text layer, with pypdf (the pdf extra)
}
_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_MD_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")


@dataclass(frozen=True)
class Block:
    """A heading (``level`` 1-6) or a paragraph (``level`` 0)."""

    text: str
    level: int = 0


@dataclass(frozen=True)
class SourceText:
    path: Path  # absolute
    kind: Kind
    sha256: str
    size: int
    blocks: tuple[Block, ...]


def find_sources(paths: Sequence[Path]) -> list[Path]:
    """The files named, and the readable files under the directories named (hidden ones
    left out), absolute and sorted; each named file must be of a kind we read."""
    found: dict[Path, None] = {}
    for given in paths:
        path = given.expanduser().absolute()
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                hidden = any(part.startswith(".") for part in child.relative_to(path).parts)
                if child.is_file() and not hidden and child.suffix.lower() in SUFFIXES:
                    found[child] = None
        elif path.is_file() or path.exists():
            _kind(path)
            found[path] = None
        else:
            raise InvalidRequestError(f"{given}: no such file or directory", param="paths")
    return list(found)


def read_source(path: Path, max_bytes: int) -> SourceText:
    """The file's blocks and digest (InvalidRequestError for a file we cannot use)."""
    kind = _kind(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise InvalidRequestError(
                f"{path}: {size} bytes is more than knowledge.max_file_bytes ({max_bytes})",
                param="paths",
            )
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidRequestError(
            f"{path}: cannot read it ({exc.strerror})", param="paths"
        ) from None
    if kind == "pdf":
        from .pdf import pdf_blocks

        blocks = tuple(pdf_blocks(path, data))
    else:
        blocks = tuple(_READERS[kind](_decoded(path, data)))
    return SourceText(path, kind, hashlib.sha256(data).hexdigest(), len(data), blocks)


def _decoded(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(
            f"{path}: not UTF-8 text (byte {exc.start}); convert it first", param="paths"
        ) from None


def _kind(path: Path) -> Kind:
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        known = " ".join(sorted(SUFFIXES))
        raise InvalidRequestError(
            f"{path}: cannot read {path.suffix or 'files without a suffix'}; "
            f"knowledge reads {known}",
            param="paths",
        )
    return kind


def _paragraphs(lines: Iterable[str]) -> Iterator[str]:
    """Runs of non-blank lines, joined with spaces; a list item starts its own."""
    run: list[str] = []
    for line in lines:
        if not line.strip() or _MD_ITEM.match(line):
            if run:
                yield " ".join(run)
            run = [line.strip()] if line.strip() else []
        else:
            run.append(line.strip())
    if run:
        yield " ".join(run)


def _markdown(text: str) -> Iterator[Block]:
    body: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        heading = None if fenced else _MD_HEADING.match(line)
        if heading:
            yield from (Block(p) for p in _paragraphs(body))
            body = []
            yield Block(heading.group(2), len(heading.group(1)))
        else:
            body.append(line)
    yield from (Block(p) for p in _paragraphs(body))


def _plain(text: str) -> Iterator[Block]:
    """Paragraphs; a short line alone in its paragraph, in capitals, is a heading."""
    for paragraph in _paragraphs(text.splitlines()):
        letters = [c for c in paragraph if c.isalpha()]
        if letters and len(paragraph) <= 80 and paragraph.upper() == paragraph:
            yield Block(paragraph.title() if paragraph.isupper() else paragraph, 1)
        else:
            yield Block(paragraph)


_HEADINGS: dict[str, int] = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BREAKS = frozenset(
    [
        "p",
        "li",
        "tr",
        "div",
        "section",
        "article",
        "br",
        "dt",
        "dd",
        "blockquote",
        "pre",
        "table",
        "ul",
        "ol",
        "title",
        "caption",
        "header",
        "footer",
        "main",
    ]
)
_HIDDEN = frozenset({"script", "style", "template", "noscript", "head"})


class _HtmlBlocks(HTMLParser):
    """Headings, paragraphs, list items and table rows of an HTML page; what is inside
    script, style and template elements is not text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self._text: list[str] = []
        self._level = 0
        self._hidden = 0
        self._title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden += 1
        if tag == "title":
            self._title = True
            self._flush()
            self._level = 1
        elif tag in _HEADINGS or tag in _BREAKS:
            self._flush()
            self._level = _HEADINGS.get(tag, 0)
        elif tag in ("td", "th") and self._text:
            self._text.append(" | ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._title = False
            self._flush()
        elif tag in _HEADINGS or tag in _BREAKS:
            self._flush()
        if tag in _HIDDEN and self._hidden:
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden or self._title:
            self._text.append(data)

    def _flush(self) -> None:
        text = " ".join("".join(self._text).split())
        if text:
            self.blocks.append(Block(text, self._level))
        self._text = []
        self._level = 0

    def close(self) -> None:
        super().close()
        self._flush()


def _html(text: str) -> Iterator[Block]:
    parser = _HtmlBlocks()
    parser.feed(text)
    parser.close()
    # a title that repeats the first heading says nothing new
    blocks = parser.blocks
    if len(blocks) > 1 and blocks[0].level and blocks[0].text == blocks[1].text:
        blocks = blocks[1:]
    return iter(blocks)


_READERS = {"markdown": _markdown, "text": _plain, "html": _html}
