"""One model answers: the plain request, and the end of every route."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

from ridgeline_core.runtime import FinishReason

from .base import Member, Strategy, StrategyOutcome, Text, Verdict
from .members import Answer, Call

__all__ = ["Single", "finish", "stream_member"]


class Single:
    kind = "single"

    def __init__(self, name: str, model: str) -> None:
        self.name = name
        self.models: tuple[str, ...] = (model,)

    async def run(self, call: Call) -> AsyncGenerator[Text | StrategyOutcome, None]:
        async with contextlib.aclosing(stream_member(call, self.models[0])) as items:
            async for item in items:
                if isinstance(item, Text):
                    yield item
                else:
                    yield finish(call, self, item.member, item.outcome.finish_reason)


async def stream_member(call: Call, model: str) -> AsyncGenerator[Text | Answer, None]:
    """``model``'s answer streamed as it comes; the :class:`Answer` last, accepted."""
    async with contextlib.aclosing(call.stream(model)) as items:
        async for item in items:
            if isinstance(item, Answer):
                item.member.accepted = True
            yield item


def finish(
    call: Call,
    strategy: Strategy,
    answer: Member,
    reason: FinishReason,
    verdict: Verdict | None = None,
) -> StrategyOutcome:
    """The outcome of ``strategy`` with ``answer``'s text as the answer."""
    return StrategyOutcome(
        finish_reason=reason,
        answer_model=answer.model,
        kind=strategy.kind,
        name=strategy.name,
        members=call.members,
        verdict=verdict,
        notes=call.notes,
        queue_s=call.queue_s or 0.0,
    )
