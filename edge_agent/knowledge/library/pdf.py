"""PDF sources: the text layer of each page, read with pypdf (the ``pdf`` extra).

pypdf is pure Python (no native code to build on a Raspberry Pi or a Jetson), BSD
licensed and actively maintained; it reads the text a PDF carries and nothing else. Each
page becomes a section headed ``page N`` (so a citation names its page); a short line in
capitals is a heading under it, the other lines run into paragraphs (a text layer rarely
keeps blank lines, so a paragraph ends at a heading, a blank line or the page's end). A scanned PDF
has no text layer and is refused (run OCR first); an encrypted one is read only when it
opens without a password. Whatever else goes wrong in the parser names the file.
"""

from __future__ import annotations

import io
from pathlib import Path
from types import ModuleType

from ridgeline_core.errors import InvalidRequestError

from .sources import Block

__all__ = ["pdf_blocks"]


def pdf_blocks(path: Path, data: bytes) -> list[Block]:
    """The headed paragraphs of each page."""
    pages = _page_texts(path, data)
    blocks: list[Block] = []
    for number, text in enumerate(pages, 1):
        if text.strip():
            blocks.append(Block(f"page {number}", 1))
            blocks.extend(_page_blocks(text))
    if not blocks:
        raise InvalidRequestError(
            f"{path}: no text in its {len(pages)} pages (a scanned PDF?); run OCR on it "
            "first (for example ocrmypdf) or leave it out",
            param="paths",
        )
    return blocks


def _page_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    run: list[str] = []
    for line in [*text.splitlines(), ""]:
        line = " ".join(line.split())
        letters = [c for c in line if c.isalpha()]
        heading = bool(letters) and len(line) <= 80 and line.upper() == line
        if (heading or not line) and run:
            blocks.append(Block(" ".join(run)))
            run = []
        if heading:
            blocks.append(Block(line.title(), 2))
        elif line:
            run.append(line)
    return blocks


def _page_texts(path: Path, data: bytes) -> list[str]:
    pypdf = _pypdf(path)
    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise InvalidRequestError(
                f"{path}: the PDF needs a password; save a copy without one", param="paths"
            )
        return [page.extract_text() or "" for page in reader.pages]
    except InvalidRequestError:
        raise
    except Exception as exc:  # a parser of untrusted files fails in many ways: name the file
        raise InvalidRequestError(
            f"{path}: not a PDF that can be read ({type(exc).__name__}: {exc})", param="paths"
        ) from None


def _pypdf(path: Path) -> ModuleType:
    try:
        import pypdf
    except ImportError:
        raise InvalidRequestError(
            f"{path}: reading PDF needs pypdf: pip install 'ridgeline[pdf]' (or convert it "
            "to text first, e.g. with pdftotext)",
            param="paths",
        ) from None
    return pypdf
