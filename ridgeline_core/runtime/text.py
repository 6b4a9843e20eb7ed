"""Incremental text handling for streamed tokens: UTF-8 reassembly and stop sequences."""

from __future__ import annotations

import codecs
from collections.abc import Sequence

__all__ = ["StopMatcher", "Utf8Stream"]


class Utf8Stream:
    """Turns token bytes into text, holding back a character split across tokens.

    A character still unfinished when the text ends (``max_tokens`` cut it, or the model
    stopped inside it) is dropped: the text is the whole characters before the cut, never
    U+FFFD for the missing bytes. Bytes that are wrong in themselves (no character starts
    or continues that way) still read as U+FFFD where they are.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def flush(self) -> str:
        # The decoder keeps back only the start of a character that may still complete
        # (anything else it has already replaced), so what it holds at the end is the cut.
        self._decoder.reset()
        return ""


class StopMatcher:
    """Finds stop sequences in streamed text without ever emitting part of one.

    :meth:`feed` returns the text that is safe to emit and, once a stop
    sequence appears, which one; the stop sequence and anything after it are
    dropped. Text that might still become a stop sequence is held back until
    later text decides, so the result does not depend on how the text was split
    into pieces: the stop that starts earliest wins, the longest at that place.
    ``final=True`` marks the end of the stream and releases what is held.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        # longest first: at one position the longest stop wins
        self._stops = tuple(sorted((s for s in dict.fromkeys(stops) if s), key=len, reverse=True))
        self._longest = len(self._stops[0]) if self._stops else 0
        self._held = ""

    def feed(self, text: str, final: bool = False) -> tuple[str, str | None]:
        if not self._stops:
            return text, None
        buffer = self._held + text
        self._held = ""
        hit_at, hit = len(buffer), None
        for stop in self._stops:
            index = buffer.find(stop)
            if index != -1 and index < hit_at:
                hit_at, hit = index, stop
        # The earliest place where a stop (or a longer one than the hit) could still
        # begin but the text ends first: wait for more text from there.
        pending = len(buffer) if final else self._earliest_partial(buffer, hit_at)
        if pending < len(buffer):
            self._held = buffer[pending:]
            return buffer[:pending], None
        return buffer[:hit_at], hit

    def _earliest_partial(self, buffer: str, last: int) -> int:
        first = max(0, len(buffer) - self._longest + 1)
        for start in range(first, min(last, len(buffer) - 1) + 1):
            tail = buffer[start:]
            if any(len(tail) < len(stop) and stop.startswith(tail) for stop in self._stops):
                return start
        return len(buffer)
