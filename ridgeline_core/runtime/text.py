"""Incremental text handling for streamed tokens: UTF-8 reassembly and stop sequences."""

from __future__ import annotations

import codecs
from collections.abc import Sequence

__all__ = ["StopMatcher", "Utf8Stream"]


class Utf8Stream:
    """Turns token bytes into text, holding back a character split across tokens."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


class StopMatcher:
    """Finds stop sequences in streamed text without ever emitting part of one.

    :meth:`feed` returns the text that is safe to emit and, once a stop
    sequence appears, which one; the stop sequence and anything after it are
    dropped. Text that might be the start of a stop sequence is held back until
    the next piece decides it.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in dict.fromkeys(stops) if s)
        self._held = ""

    def feed(self, text: str) -> tuple[str, str | None]:
        if not self._stops:
            return text, None
        buffer = self._held + text
        hit_at, hit = len(buffer) + 1, None
        for stop in self._stops:
            index = buffer.find(stop)
            if index != -1 and index < hit_at:
                hit_at, hit = index, stop
        if hit is not None:
            self._held = ""
            return buffer[:hit_at], hit
        keep = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), keep, -1):
                if buffer.endswith(stop[:size]):
                    keep = size
                    break
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], None

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held
