"""The outcome memory's JSONL file, one outcome a line, followed as other processes append
to it and rewritten atomically when it holds too many stale lines."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from ridgeline_core.errors import StoreError
from ridgeline_core.files import atomic_write, private_append, private_dir

from .memory_outcome import Outcome

__all__ = ["OutcomeLog"]

log = logging.getLogger("edge_agent.knowledge.memory")


class OutcomeLog:
    """The memory's JSONL file, followed as it grows: what was read of it (its identity, the
    bytes read, its lines), appends, and atomic rewrites when it holds too many stale
    lines."""

    def __init__(self, path: Path, max_entries: int) -> None:
        self.path, self.max_entries = path, max_entries
        self._read = _ReadMark()

    def change(self) -> Literal["reload", "more"] | None:
        """How the file changed since it was read: rewritten, grown, or not at all."""
        return self._read.change(self.path)

    def reload(self) -> list[Outcome]:
        self._read = _ReadMark()
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        self._read.file_id = _id(stat)
        return self.read_more()

    def read_more(self) -> list[Outcome]:
        """The outcomes of the complete lines past what was read (the newest of each)."""
        data = _read_from(self.path, self._read.offset)
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        lines = data[:end].splitlines()
        self._read.offset += end
        self._read.lines += len(lines)
        return _parse(lines, self.path)[-self.max_entries :]

    def append(self, outcomes: Sequence[Outcome], loaded: bool) -> None:
        data = _jsonl(outcomes)
        start, stat = _append(self.path, data)
        mark = self._read
        if loaded and start == mark.offset and mark.file_id in (None, _id(stat)):
            # Nobody wrote in between: these lines are already in memory.
            mark.offset = start + len(data)
            mark.lines += len(outcomes)
            mark.file_id = _id(stat)

    def stale_lines(self, held: int) -> int:
        """Lines of the file beyond what it needs, once that is worth a rewrite."""
        excess = self._read.lines - held
        return excess if excess > max(64, self.max_entries // 4) else 0

    def rewrite(self, outcomes: Sequence[Outcome]) -> None:
        """Rewrite the file with ``outcomes`` (atomically: a reader sees old or new)."""
        data = _jsonl(outcomes)
        try:
            atomic_write(self.path, data)
            stat = self.path.stat()
        except OSError as exc:
            raise StoreError(f"cannot rewrite the outcome memory {self.path}: {exc}") from exc
        self._read = _ReadMark(_id(stat), len(data), len(outcomes))


@dataclass
class _ReadMark:
    """How far this process has read the file, to tell a file others appended to (read on
    from the offset) from one rewritten under it (read again)."""

    file_id: tuple[int, int] | None = None  # (device, inode) read
    offset: int = 0  # bytes of the file read
    lines: int = 0  # lines in those bytes (stale ones included)

    def change(self, path: Path) -> Literal["reload", "more"] | None:
        """How ``path`` changed since it was read: rewritten, grown, or not at all."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        if (stat.st_dev, stat.st_ino) != self.file_id or stat.st_size < self.offset:
            return "reload"  # rewritten by another process
        return "more" if stat.st_size > self.offset else None


def _parse(lines: list[bytes], path: Path) -> list[Outcome]:
    new: dict[tuple[str, str], Outcome] = {}
    bad = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            outcome = Outcome.from_json(json.loads(line))
        except ValueError:
            bad += 1
            continue
        new.pop((outcome.model, outcome.prompt), None)
        new[(outcome.model, outcome.prompt)] = outcome  # the newest judgement counts
    if bad:
        log.warning("outcome memory %s: skipped %d malformed lines", path, bad)
    return list(new.values())


def _jsonl(outcomes: Sequence[Outcome]) -> bytes:
    return b"".join(json.dumps(asdict(o), ensure_ascii=False).encode() + b"\n" for o in outcomes)


def _id(stat: os.stat_result) -> tuple[int, int]:
    return stat.st_dev, stat.st_ino


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read()
    except OSError as exc:
        raise StoreError(f"cannot read the outcome memory {path}: {exc}") from exc


def _append(path: Path, data: bytes) -> tuple[int, os.stat_result]:
    """Append ``data``; where it started and the file's stat after."""
    try:
        # past prompts can be sensitive: only this user reads them
        private_dir(path.parent)
        with private_append(path) as handle:
            start = handle.tell()
            handle.write(data)
            return start, os.fstat(handle.fileno())
    except OSError as exc:
        raise StoreError(f"cannot write the outcome memory {path}: {exc}") from exc
