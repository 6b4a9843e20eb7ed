"""What an escalation sends when local knowledge is in the prompt, under the privacy
setting that holds (:mod:`.policy`), and the words the decision record uses for it."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from ridgeline_core.runtime import ChatMessage
from ridgeline_core.wire import LocalDraft

from ..redaction import Redactor
from .policy import Escalate

__all__ = ["Outbound", "outbound"]


@dataclass(frozen=True)
class Outbound:
    messages: list[ChatMessage]
    draft: LocalDraft | None
    sent: str  # in words, for the decision record
    withheld: list[str] = field(default_factory=list)
    redacted: dict[str, int] = field(default_factory=dict)  # kind → how many


def outbound(
    setting: Escalate,
    plain: Sequence[ChatMessage],
    augmented: Sequence[ChatMessage],
    draft: LocalDraft | None,
    passages: int,
    redactor: Redactor,
) -> Outbound:
    """The messages and draft for the broker. ``plain`` is the conversation as asked,
    ``augmented`` the one with the ``passages`` retrieved chunks in it. ``never`` is kept
    from escalating by the route; asking for it here is a bug."""
    assert setting != "never", "a request under 'never' does not escalate"
    if setting == "allowed":
        return Outbound(list(augmented), draft, f"the question with {passages} passages")
    if setting == "question-only":
        withheld = [f"{passages} retrieved passages"]
        if draft is not None:
            withheld.append("the local draft (written from them)")
        return Outbound(list(plain), None, "the question only", withheld)
    counts: Counter[str] = Counter()
    messages = []
    for message in augmented:
        redacted = redactor.redact(message.content)
        counts.update(redacted.counts())
        messages.append(ChatMessage(message.role, redacted.text))
    if draft is not None:
        redacted = redactor.redact(draft.text)
        counts.update(redacted.counts())
        draft = dataclasses.replace(draft, text=redacted.text)
    found = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "nothing found"
    return Outbound(
        messages, draft, f"the question with {passages} passages, personal data redacted ({found})",
        redacted=dict(counts),
    )  # fmt: skip
