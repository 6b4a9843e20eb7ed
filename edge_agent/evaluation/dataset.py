"""Question sets for evaluation: a JSONL loader and a generator of fresh arithmetic.

A dataset file has one JSON object per line::

    {"prompt": "What is the capital of France?", "answers": ["Paris"], "id": "geo-1", "kind": "geo"}

``prompt`` (a non-empty string) and ``answers`` (a non-empty list of non-empty strings)
are required; ``id`` defaults to ``line-N`` (N is the 1-based line number) and ``kind`` to
``unknown``; ``collection`` names the knowledge collection that holds the answer (a
dataset for answers from local knowledge); other keys are ignored. Blank lines are
skipped. Every problem raises ``InvalidRequestError`` with ``path:line: what is wrong``
(``path: ...`` for problems of the whole file: missing, not UTF-8, no items).

The arithmetic generator makes questions no model has memorised from a benchmark, with
exact answers, so a run can be repeated with a new seed.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ridgeline_core.errors import InvalidRequestError

__all__ = [
    "ARITHMETIC_KINDS",
    "MAX_LINES",
    "QAItem",
    "arithmetic_items",
    "load_dataset",
    "load_judged",
]

MAX_LINES = 100_000

_NUMBER_WORDS: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
)


@dataclass(frozen=True)
class QAItem:
    """One question with every answer that counts as correct."""

    id: str
    kind: str
    prompt: str
    answers: tuple[str, ...]
    judged: bool | None = None  # a verdict already given (judged outcomes): no matching
    collection: str | None = None  # the knowledge collection that holds the answer


def load_dataset(path: str | os.PathLike[str]) -> list[QAItem]:
    """Read a JSONL question file (format in the module docstring)."""
    where = str(path)
    try:
        with Path(path).open(encoding="utf-8") as handle:
            lines = _read_lines(handle, where)
    except FileNotFoundError:
        raise InvalidRequestError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise InvalidRequestError(f"{where}: is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(f"{where}: not UTF-8 text ({exc.reason})") from None
    items: list[QAItem] = []
    first_line_of: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        item = _parse_line(line, f"{where}:{number}", number)
        if item.id in first_line_of:
            raise InvalidRequestError(
                f"{where}:{number}: duplicate id {item.id!r} (first on line "
                f"{first_line_of[item.id]})"
            )
        first_line_of[item.id] = number
        items.append(item)
    if not items:
        raise InvalidRequestError(f"{where}: empty file, no questions in it")
    return items


def load_judged(path: str | os.PathLike[str], model: str) -> list[QAItem]:
    """``model``'s judged outcomes in an outcome memory file (JSONL: prompt, model, right,
    source; feedback, calibration or the broker's verdicts on drafts) as items whose
    verdict is given; the latest verdict of a prompt wins."""
    from ..knowledge.memory_outcome import Outcome

    where = str(path)
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InvalidRequestError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"{where}: cannot be read ({exc})") from None
    latest: dict[str, bool] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            outcome = Outcome.from_json(json.loads(line))
        except ValueError as exc:
            raise InvalidRequestError(f"{where}:{number}: not a judged outcome: {exc}") from None
        if outcome.model == model:
            latest.pop(outcome.prompt, None)  # keep the order of the latest verdicts
            latest[outcome.prompt] = outcome.right
    return [
        QAItem(f"judged-{i}", "judged", prompt, (), judged=right)
        for i, (prompt, right) in enumerate(latest.items(), start=1)
    ]


def _read_lines(handle: Iterable[str], where: str) -> list[str]:
    lines: list[str] = []
    for line in handle:
        if len(lines) == MAX_LINES:
            raise InvalidRequestError(f"{where}:{MAX_LINES + 1}: more than {MAX_LINES} lines")
        lines.append(line)
    return lines


def _parse_line(line: str, at: str, number: int) -> QAItem:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(f"{at}: invalid JSON ({exc.msg}, column {exc.colno})") from None
    if not isinstance(record, dict):
        raise InvalidRequestError(f"{at}: expected a JSON object, got {type(record).__name__}")
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequestError(f"{at}: 'prompt' must be a non-empty string")
    answers = record.get("answers")
    if (
        not isinstance(answers, list)
        or not answers
        or not all(isinstance(a, str) and a.strip() for a in answers)
    ):
        raise InvalidRequestError(f"{at}: 'answers' must be a non-empty list of non-empty strings")
    item_id = _optional_text(record, "id", f"line-{number}", at)
    kind = _optional_text(record, "kind", "unknown", at)
    collection = _optional_text(record, "collection", "", at) or None
    return QAItem(item_id, kind, prompt, tuple(answers), collection=collection)


def _optional_text(record: dict[str, Any], key: str, default: str, at: str) -> str:
    if key not in record:
        return default
    value = record[key]
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError(f"{at}: {key!r} must be a non-empty string when given")
    return value


ARITHMETIC_KINDS: tuple[str, ...] = ("add", "sub", "mul")


def arithmetic_items(n: int, seed: int, kinds: Sequence[str] = ARITHMETIC_KINDS) -> list[QAItem]:
    """``n`` fresh arithmetic questions, the same for the same ``seed``.

    add: two numbers 2..99; sub: a in 10..99 minus b in 1..a (never negative); mul: 2..19
    times 2..12. Answers are the digits, plus the English word for results 0..20. Item
    kinds are ``arith-add``, ``arith-sub``, ``arith-mul``; ids ``gen-arith-<seed>-<i>``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if isinstance(kinds, str) or not kinds:
        raise ValueError("kinds must be a non-empty sequence of kind names")
    unknown = sorted(set(kinds) - set(ARITHMETIC_KINDS))
    if unknown:
        raise ValueError(f"unknown arithmetic kinds {unknown}; known: {list(ARITHMETIC_KINDS)}")
    rng = random.Random(seed)
    items = []
    for index in range(n):
        kind = rng.choice(list(kinds))
        a, b, symbol, result = _QUESTION_MAKERS[kind](rng)
        answers = [str(result)]
        if 0 <= result <= 20:
            answers.append(_NUMBER_WORDS[result])
        items.append(
            QAItem(
                id=f"gen-arith-{seed}-{index}",
                kind=f"arith-{kind}",
                prompt=f"What is {a} {symbol} {b}? Answer with just the number.",
                answers=tuple(answers),
            )
        )
    return items


def _add(rng: random.Random) -> tuple[int, int, str, int]:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    return a, b, "+", a + b


def _sub(rng: random.Random) -> tuple[int, int, str, int]:
    a = rng.randint(10, 99)
    b = rng.randint(1, a)
    return a, b, "-", a - b


def _mul(rng: random.Random) -> tuple[int, int, str, int]:
    a, b = rng.randint(2, 19), rng.randint(2, 12)
    return a, b, "*", a * b


_QUESTION_MAKERS: dict[str, Callable[[random.Random], tuple[int, int, str, int]]] = {
    "add": _add,
    "sub": _sub,
    "mul": _mul,
}
