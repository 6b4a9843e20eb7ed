"""What an escalation may carry when local knowledge is in the prompt.

Settings, most private first:

- ``never``: the request stays on the device, whatever the threshold says;
- ``question-only``: the broker gets the conversation without the retrieved passages,
  and not the local draft (it was written from them);
- ``redacted``: the passages and the draft go with personal data replaced by markers
  (:mod:`edge_agent.knowledge.redaction`), the question too;
- ``allowed``: everything goes.

Each collection may carry its own setting; the rest take ``knowledge.escalate``. When a
question draws on several collections, the most private of their settings holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import get_args

from ...settings import Escalate

__all__ = ["ESCALATE_SETTINGS", "Escalate", "strictest"]

ESCALATE_SETTINGS: tuple[Escalate, ...] = get_args(Escalate)  # most private first


def strictest(settings: Iterable[Escalate]) -> Escalate | None:
    """The most private of ``settings`` (None when there are none)."""
    ranked = sorted(settings, key=ESCALATE_SETTINGS.index)
    return ranked[0] if ranked else None
