"""Personal data taken out before text leaves the device (issue 18's ``redacted`` setting):
each kind found and replaced, near misses left alone, and redacting is idempotent."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.knowledge.redaction import Redactor, iban_valid, luhn_valid

REDACTOR = Redactor(names=["Ada Lovelace", "Grace Hopper"])


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        ("write to ada.lovelace+work@example.co.uk today", "write to [EMAIL] today", "email"),
        ("call +44 20 7946 0958 now", "call [PHONE] now", "phone"),
        ("call (555) 123-4567", "call [PHONE]", "phone"),
        ("ring 555-123-4567.", "ring [PHONE].", "phone"),
        ("mobile 0171 2345678", "mobile [PHONE]", "phone"),
        ("or +4915123456789", "or [PHONE]", "phone"),
        ("card 4111 1111 1111 1111 ok", "card [CARD] ok", "card"),
        ("amex 3782-822463-10005", "amex [CARD]", "card"),
        ("IBAN DE89 3704 0044 0532 0130 00, thanks", "IBAN [IBAN], thanks", "iban"),
        ("pay GB82WEST12345698765432", "pay [IBAN]", "iban"),
        ("host 192.168.1.10 is down", "host [IP] is down", "ip"),
        ("v6 2001:db8::8a2e:370:7334 up", "v6 [IP] up", "ip"),
        ("ask ada lovelace or GRACE HOPPER", "ask [NAME] or [NAME]", "name"),
    ],
)
def test_each_kind_is_found_and_replaced(text: str, expected: str, kind: str) -> None:
    redacted = REDACTOR.redact(text)
    assert redacted.text == expected
    assert set(redacted.counts()) == {kind}
    for finding in redacted.findings:
        assert finding.kind == kind and text[finding.start : finding.end].strip()


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",  # fails the Luhn check
        "IBAN GB82 WEST 1234 5698 7654 33 end",  # wrong check sum
        "version 1.2.3 and 10.0.0",  # not four octets
        "address 999.1.1.1",  # an octet over 255
        "meet at 12:30 on 2024-01-15 or 15.01.2024",  # times and dates
        "pi is 3.14159, total 1,234.56, order 1234 5678",  # numbers, short runs
        "What is 40 times 43? It is 1720.",
        "Gracefully, Adams and Lovelace-like names stay",  # not whole listed names
        "user@localhost and @handle",  # no domain
        "account 1234 5698 7654 3322 11",  # a long digit run is no phone
    ],
)
def test_near_misses_are_left_alone(text: str) -> None:
    redacted = REDACTOR.redact(text)
    assert redacted.text == text, redacted.findings
    assert redacted.counts() == {}


def test_several_kinds_in_one_text_keep_their_order() -> None:
    text = "Grace Hopper (grace@navy.mil, +1 202 555 0143) paid with 4111111111111111."
    redacted = REDACTOR.redact(text)
    assert redacted.text == "[NAME] ([EMAIL], [PHONE]) paid with [CARD]."
    assert [f.kind for f in redacted.findings] == ["name", "email", "phone", "card"]


def test_the_checks() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("DE89 3704 0044 0532 0130 00") and not iban_valid("DE89370400440532013001")
    assert not iban_valid("DE89") and not iban_valid("DE89 3704 0044 0532 0130 0!")


_TEXT = st.text(alphabet=st.sampled_from(list("abcXYZ 0123456789+-.@:()[],\n")), max_size=80)


@pytest.mark.property
@given(_TEXT)
def test_redacting_is_idempotent_and_leaves_nothing_found(text: str) -> None:
    once = REDACTOR.redact(text)
    twice = REDACTOR.redact(once.text)
    assert twice.text == once.text
    assert twice.findings == ()


@pytest.mark.property
@given(st.text(alphabet=st.sampled_from(list("abcdefgh ,.?!")), max_size=80))
def test_text_without_digits_or_at_signs_is_unchanged(text: str) -> None:
    assert Redactor().redact(text).text == text
