"""Answers constrained to a fixed set of strings (``SamplingParams.choices``).

The limits every layer checks, the GBNF grammar that makes a grammar-constrained
sampler (llama.cpp, or an upstream server that accepts GBNF) write exactly one
choice, and :class:`ChoiceHolder`, which holds a constrained answer back until it
is complete and refuses to release anything that is not a choice.

The grammar allows nothing before or after the choice: no leading space, no
newline, no quotes. Once a choice is complete and no longer choice extends it,
the only token the grammar sampler allows is end-of-generation.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from ..errors import InvalidRequestError, ModelError

__all__ = [
    "MAX_CHOICES",
    "MAX_CHOICE_CHARS",
    "ChoiceHolder",
    "check_choices",
    "choices_grammar",
    "gbnf_literal",
    "longest_choice_bytes",
]

MAX_CHOICES = 64
MAX_CHOICE_CHARS = 64

# GBNF escapes with a name; other characters outside printable ASCII become \x, \u or \U.
_NAMED_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def check_choices(choices: Sequence[str], field: str = "choices") -> tuple[str, ...]:
    """``choices`` as a tuple, or InvalidRequestError saying which rule it breaks: at most
    64 strings of 1-64 characters without control characters (newlines, tabs, NUL, ...:
    a label never holds one, and llama.cpp's grammars end a string at NUL), no
    duplicates."""
    if len(choices) > MAX_CHOICES:
        raise InvalidRequestError(f"{field} has {len(choices)} strings; at most {MAX_CHOICES}")
    seen: set[str] = set()
    for index, choice in enumerate(choices):
        if not 1 <= len(choice) <= MAX_CHOICE_CHARS:
            raise InvalidRequestError(
                f"{field}[{index}] is {len(choice)} characters; "
                f"each choice must be 1-{MAX_CHOICE_CHARS}"
            )
        if any(unicodedata.category(char) == "Cc" for char in choice):
            raise InvalidRequestError(
                f"{field}[{index}] {choice!r} has a control character (newline, tab, ...)"
            )
        if choice in seen:
            raise InvalidRequestError(f"{field}[{index}] {choice!r} is a duplicate")
        seen.add(choice)
    return tuple(choices)


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal: quotes and backslashes escaped, anything outside
    printable ASCII written as a ``\\xHH``, ``\\uHHHH`` or ``\\UHHHHHHHH`` code point, so
    the grammar is plain ASCII whatever the choice holds."""
    parts = ['"']
    for char in text:
        code = ord(char)
        if char in _NAMED_ESCAPES:
            parts.append(_NAMED_ESCAPES[char])
        elif 0x20 <= code < 0x7F:
            parts.append(char)
        elif code < 0x80:
            parts.append(f"\\x{code:02X}")
        elif code <= 0xFFFF:
            parts.append(f"\\u{code:04X}")
        else:
            parts.append(f"\\U{code:08X}")
    parts.append('"')
    return "".join(parts)


def choices_grammar(choices: Sequence[str]) -> str:
    """A GBNF grammar whose only sentences are the ``choices`` (root rule ``root``)."""
    if not choices:
        raise ValueError("a choices grammar needs at least one choice")
    return "root ::= " + " | ".join(gbnf_literal(choice) for choice in choices) + "\n"


def longest_choice_bytes(choices: Sequence[str]) -> int:
    """UTF-8 bytes of the longest choice: a grammar sampler writes at least one byte per
    token, so a choice takes at most this many tokens (plus end-of-generation)."""
    return max((len(choice.encode("utf-8")) for choice in choices), default=0)


class ChoiceHolder:
    """Stands in for the stop matcher of a constrained answer (same ``feed`` contract):
    releases nothing until the stream ends, then the whole text if it is one of the
    choices. Anything else (the answer ran out of room, or a sampler broke the
    constraint) is a ModelError, so no caller ever sees text outside the set."""

    def __init__(self, choices: Sequence[str], model: str) -> None:
        self._choices = frozenset(choices)
        self._model = model
        self._held = ""

    def feed(self, text: str, final: bool = False) -> tuple[str, str | None]:
        self._held += text
        if not final:
            return "", None
        answer, self._held = self._held, ""
        if answer not in self._choices:
            raise ModelError(
                f"{self._model} wrote {answer[:80]!r}, which is not one of the "
                f"{len(self._choices)} choices"
            )
        return answer, None
