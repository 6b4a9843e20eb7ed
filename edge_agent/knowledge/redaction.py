"""Personal data taken out of text before it leaves the device (the ``redacted`` privacy
setting): e-mail addresses, phone numbers, payment card numbers (Luhn-checked), IBANs
(ISO 13616 mod-97 checked), IPv4 and IPv6 addresses, and names from a configured list.

Each finding is replaced by a marker of its kind (``[EMAIL]``, ``[PHONE]``, ``[CARD]``,
``[IBAN]``, ``[IP]``, ``[NAME]``) and listed, so the decision record can say what was
withheld. Checks keep near misses: a 16-digit number that fails the Luhn check, an IBAN
with a wrong check sum, a version number or an address with an octet over 255, a date or a
short number are left as they are. Redacting is idempotent: markers are never redacted.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

__all__ = ["KINDS", "Finding", "Redacted", "Redactor", "iban_valid", "luhn_valid"]

KINDS = ("email", "card", "iban", "ip", "phone", "name")

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"
)
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w.]*\d)")
_IPV6 = re.compile(r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,8}){1,4}(?![\w])"
    r"|(?<![\w+])\+\d{7,15}(?!\w)"
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$|^\d{1,2}[./-]\d{1,2}[./-]\d{2,4}$")


_Finder = Callable[[str], Iterator[tuple[int, int]]]  # spans of one kind in a text


@dataclass(frozen=True)
class Finding:
    kind: str  # one of KINDS
    start: int
    end: int


@dataclass(frozen=True)
class Redacted:
    """Text with its personal data replaced, and what was found (offsets in the input)."""

    text: str
    findings: tuple[Finding, ...]

    def counts(self) -> dict[str, int]:
        """How many of each kind were taken out, e.g. ``{"email": 1, "phone": 2}``."""
        return dict(Counter(finding.kind for finding in self.findings))


def luhn_valid(digits: str) -> bool:
    """The Luhn check of a payment card number (digits only)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """The ISO 13616 mod-97 check of an IBAN (spaces allowed)."""
    compact = iban.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34 or not compact.isalnum():
        return False
    moved = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in moved)
    return int(number) % 97 == 1


class Redactor:
    """Finds and replaces personal data; ``names`` are matched as whole words, any case."""

    def __init__(self, names: Sequence[str] = ()) -> None:
        cleaned = sorted({name.strip() for name in names if name.strip()}, key=len, reverse=True)
        self._names = (
            re.compile(r"(?<!\w)(?:" + "|".join(re.escape(n) for n in cleaned) + r")(?!\w)", re.I)
            if cleaned
            else None
        )

    def find(self, text: str) -> list[Finding]:
        """Non-overlapping findings in order; where two overlap, the one found by the more
        specific check (``KINDS`` order) wins."""
        found: list[Finding] = []
        taken: list[tuple[int, int]] = []
        for kind, finder in self._finders():
            for start, end in finder(text):
                if not any(start < t_end and t_start < end for t_start, t_end in taken):
                    found.append(Finding(kind, start, end))
                    taken.append((start, end))
        return sorted(found, key=lambda finding: finding.start)

    def redact(self, text: str) -> Redacted:
        findings = self.find(text)
        pieces, at = [], 0
        for finding in findings:
            pieces += [text[at : finding.start], f"[{finding.kind.upper()}]"]
            at = finding.end
        pieces.append(text[at:])
        return Redacted("".join(pieces), tuple(findings))

    def _finders(self) -> list[tuple[str, _Finder]]:
        finders: list[tuple[str, _Finder]] = [
            ("email", _emails),
            ("card", _cards),
            ("iban", _ibans),
            ("ip", _ips),
            ("phone", _phones),
        ]
        if self._names is not None:
            names = self._names
            finders.append(("name", lambda text: (m.span() for m in names.finditer(text))))
        return finders


def _emails(text: str) -> Iterator[tuple[int, int]]:
    return (match.span() for match in _EMAIL.finditer(text))


def _cards(text: str) -> Iterator[tuple[int, int]]:
    for match in _CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            yield match.span()


def _ibans(text: str) -> Iterator[tuple[int, int]]:
    for match in _IBAN.finditer(text):
        candidate = match.group()
        # the IBAN may be followed by more words: try the longest valid prefix of groups
        for end in range(len(candidate), 14, -1):
            if candidate[end - 1] != " " and iban_valid(candidate[:end]):
                yield match.start(), match.start() + end
                break


def _ips(text: str) -> Iterator[tuple[int, int]]:
    for pattern in (_IPV4, _IPV6):
        for match in pattern.finditer(text):
            try:
                ipaddress.ip_address(match.group())
            except ValueError:
                continue
            if ":" in match.group() and match.group().count(":") < 2:
                continue
            yield match.span()


def _phones(text: str) -> Iterator[tuple[int, int]]:
    for match in _PHONE.finditer(text):
        candidate = match.group()
        digits = sum(char.isdigit() for char in candidate)
        # a national number has at most 11 digits; longer runs are account or card numbers
        longest = 15 if candidate.startswith("+") else 11
        if digits < 9 or digits > longest or _DATE.match(candidate):
            continue
        if "." in candidate and not candidate.startswith("+") and candidate.count(".") > 2:
            continue  # 1.2.3.4-like: a version or an address, not a phone
        yield match.span()
