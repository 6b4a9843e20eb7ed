"""Adding files to a collection: only what changed is read, chunked and embedded again.

Every source is read and checked first (:func:`~.sources.read_source`), so a bad file
fails the command before anything is written. Then, per file: same sha256 as stored, no
work; new or changed, its chunks are embedded and replace its old ones in one
transaction. A file that was added from a directory named again and is gone from it now
is dropped. When the encoder changed, every stored chunk is embedded again from its
stored text (the source files are not needed for that).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ridgeline_core.progress import NULL_PROGRESS, Progress

from ...settings import KnowledgeSettings
from .chunking import Chunk, chunk_blocks
from .sources import SourceText, find_sources, read_source
from .store import CollectionFile

if TYPE_CHECKING:
    from ..embeddings import Embedder

__all__ = ["Embed", "IngestReport", "ingest", "ingest_into"]

Embed = Callable[[Sequence[str]], npt.NDArray[np.float32]]
_BATCH = 32


@dataclass
class IngestReport:
    collection: str
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    embedded: int = 0  # chunks embedded by this run
    chunks: int = 0  # chunks in the collection afterwards
    reembedded: bool = False  # the encoder changed: every chunk was embedded again
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"{self.collection}: {len(self.added)} added, {len(self.changed)} changed, "
            f"{len(self.unchanged)} unchanged, {len(self.removed)} removed; "
            f"{self.embedded} chunks embedded, {self.chunks} in all ({self.seconds:.1f} s)"
        )


def ingest(
    file: CollectionFile,
    paths: Sequence[Path],
    embed: Embed,
    *,
    chunk_chars: int,
    max_file_bytes: int,
    reembed: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> IngestReport:
    started = time.perf_counter()
    texts = [read_source(path, max_file_bytes) for path in find_sources(paths)]
    report = IngestReport(file.name, reembedded=reembed)
    stored = file.sources()
    if reembed:
        report.embedded += _reembed(file, embed, progress)
    todo: list[tuple[SourceText, list[Chunk]]] = []
    for text in texts:
        key = str(text.path)
        known = stored.get(key)
        if known is not None and known.sha256 == text.sha256:
            report.unchanged.append(key)
            continue
        (report.added if known is None else report.changed).append(key)
        todo.append((text, chunk_blocks(text.blocks, chunk_chars)))
    total = sum(len(chunks) for _, chunks in todo)
    if total:
        progress.start(f"embedding {total} chunks of {len(todo)} files", total)
        try:
            for text, chunks in todo:
                vectors = _embed_all(embed, [c.embedded_text() for c in chunks], progress)
                file.replace_source(str(text.path), text.sha256, text.size, chunks, vectors)
                report.embedded += len(chunks)
        finally:
            progress.finish()
    report.removed = _gone(stored, texts, paths)
    file.drop_sources(report.removed)
    report.chunks = file.count()
    report.seconds = time.perf_counter() - started
    return report


def ingest_into(
    file: CollectionFile,
    paths: Sequence[Path],
    embedder: Embedder,
    settings: KnowledgeSettings,
    progress: Progress = NULL_PROGRESS,
) -> IngestReport:
    """:func:`ingest` with the embedder and the settings; a collection embedded with
    another encoder is embedded again."""
    encoder, stored = embedder.model_sha256(), file.meta("encoder")
    report = ingest(
        file, paths, embedder.embed, chunk_chars=settings.chunk_chars,
        max_file_bytes=settings.max_file_bytes, reembed=stored not in (None, encoder),
        progress=progress,
    )  # fmt: skip
    file.set_meta(encoder=encoder)
    return report


def _embed_all(embed: Embed, texts: list[str], progress: Progress) -> npt.NDArray[np.float32]:
    parts = []
    for start in range(0, len(texts), _BATCH):
        batch = texts[start : start + _BATCH]
        parts.append(np.asarray(embed(batch), dtype=np.float32))
        progress.advance(len(batch))
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def _reembed(file: CollectionFile, embed: Embed, progress: Progress) -> int:
    """Every stored chunk embedded again from its text, a source at a time."""
    sources = file.sources()
    total = sum(s.chunks for s in sources.values())
    progress.start(f"embedding {total} stored chunks again (new encoder)", total)
    try:
        for source in sources.values():
            rows = sorted(file.source_chunks(source.path), key=lambda r: r.ordinal)
            chunks = [Chunk(r.heading, r.text) for r in rows]
            vectors = _embed_all(embed, [c.embedded_text() for c in chunks], progress)
            file.replace_source(source.path, source.sha256, source.bytes, chunks, vectors)
        file.forget_judged()  # their questions were embedded by the old encoder
    finally:
        progress.finish()
    return total


def _gone(
    stored: Mapping[str, object], texts: list[SourceText], paths: Sequence[Path]
) -> list[str]:
    """Stored sources under a directory named now that are no longer in it."""
    present = {str(t.path) for t in texts}
    roots = [p.expanduser().absolute() for p in paths if p.is_dir()]
    return sorted(
        key
        for key in stored
        if key not in present and any(Path(key).is_relative_to(root) for root in roots)
    )
