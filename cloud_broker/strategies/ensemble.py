"""Ensemble: members answer in parallel, and their answers are combined.

Members are the models, each ``samples`` times (the first greedy as asked, the others
sampled at ``temperature``). Combining: ``vote`` (normalised majority; short answers),
``best`` (the verifier model's highest P(yes)), or ``fuse`` (an aggregator model writes
one answer from the members' answers, streamed as it writes). A member that fails is
dropped with a note; fewer than ``min_members`` answers fail the request, naming the
members and why. Cancelling the request cancels every member still running.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from typing import Literal

from ridgeline_core import errors
from ridgeline_core.runtime import ChatMessage

from ..backends import BackendRequest
from .base import StrategyOutcome, Text
from .members import Answer, Call
from .single import finish
from .verify import judge
from .vote import majority, vote_key

__all__ = ["Ensemble", "fuse_messages"]

Combine = Literal["vote", "best", "fuse"]


class Ensemble:
    kind = "ensemble"

    def __init__(
        self,
        name: str,
        models: Sequence[str],
        *,
        combine: Combine = "vote",
        samples: int = 1,
        temperature: float = 0.7,
        judge_model: str = "",
        aggregator: str = "",
        min_members: int = 1,
    ) -> None:
        self.name, self.models, self.combine = name, tuple(models), combine
        self.samples, self.temperature = samples, temperature
        self.judge_model, self.aggregator, self.min_members = judge_model, aggregator, min_members

    async def run(self, call: Call) -> AsyncGenerator[Text | StrategyOutcome, None]:
        answers = await self._members(call)
        if self.combine == "fuse":
            async with contextlib.aclosing(_fuse(call, self, answers)) as items:
                async for item in items:
                    yield item
            return
        chosen = (
            _vote(answers)
            if self.combine == "vote"
            else await _best(call, self.judge_model, answers)
        )
        yield Text(chosen.text, chosen.member.model)
        yield finish(call, self, chosen.member, chosen.outcome.finish_reason)

    def _plan(self, call: Call) -> list[tuple[str, BackendRequest]]:
        plan = []
        for model in self.models:
            plan.append((model, call.request))
            plan += [(model, call.sampled(self.temperature, i)) for i in range(1, self.samples)]
        return plan

    async def _members(self, call: Call) -> list[Answer]:
        plan = self._plan(call)
        failures: list[str] = []

        async def one(model: str, request: BackendRequest) -> Answer | None:
            try:
                return await call.answer(model, request)
            except (errors.UnavailableError, errors.OverloadedError, errors.CostLimitError) as exc:
                failures.append(f"{model}: {exc}")
                call.notes.append(f"member {model} was dropped: {exc}")
                return None

        tasks = [asyncio.ensure_future(one(model, request)) for model, request in plan]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:  # cancelled, or a member failed in a way that fails the call
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)  # each member has stopped its backend
            raise
        answers = [answer for answer in results if answer is not None]
        if len(answers) < self.min_members:
            cost_only = all("max_cost" in failure for failure in failures)
            error = errors.CostLimitError if cost_only and not answers else errors.UnavailableError
            raise error(
                f"ensemble {self.name or 'ad hoc'}: {len(answers)} of {len(plan)} members "
                f"answered, {self.min_members} needed: " + "; ".join(failures)
            )
        return answers


async def _best(call: Call, judge_model: str, answers: list[Answer]) -> Answer:
    scored: list[tuple[float, int, Answer]] = []
    for index, answer in enumerate(answers):
        try:
            score = await judge(call, judge_model, answer.text)
        except (errors.UnavailableError, errors.CostLimitError) as exc:
            call.notes.append(f"answer of {answer.member.model} was not scored: {exc}")
            score = 0.0
        answer.member.score = score
        scored.append((score, -index, answer))
    chosen = max(scored, key=lambda entry: entry[:2])[2]
    chosen.member.accepted = True
    return chosen


async def _fuse(
    call: Call, ensemble: Ensemble, answers: list[Answer]
) -> AsyncGenerator[Text | StrategyOutcome, None]:
    request = call.request
    fused = BackendRequest(
        request.request_id, fuse_messages(request.messages, answers), request.params
    )
    async with contextlib.aclosing(call.stream(ensemble.aggregator, fused, "aggregator")) as items:
        async for item in items:
            if isinstance(item, Answer):
                item.member.accepted = True
                yield finish(call, ensemble, item.member, item.outcome.finish_reason)
            else:
                yield item


def _vote(answers: list[Answer]) -> Answer:
    keys = [vote_key(answer.text) for answer in answers]
    winner, _ = majority(keys)
    chosen = next((a for a, key in zip(answers, keys, strict=True) if key == winner), answers[0])
    for answer, key in zip(answers, keys, strict=True):
        answer.member.vote = key
        answer.member.accepted = bool(winner) and key == winner
        answer.member.score = keys.count(key) / len(keys) if key else 0.0
    chosen.member.accepted = True
    return chosen


def fuse_messages(
    messages: tuple[ChatMessage, ...], answers: list[Answer]
) -> tuple[ChatMessage, ...]:
    """The conversation with the members' answers added to its last user message (chat
    templates that insist on alternating roles take it as it is)."""
    listed = "\n".join(f"{i}. {a.text.strip()}" for i, a in enumerate(answers, start=1))
    ask = (
        "\n\nSeveral assistants answered this question:\n"
        f"{listed}\n"
        "Using their answers, write the single best answer to the question."
    )
    last = max(i for i, m in enumerate(messages) if m.role == "user")
    fused = ChatMessage("user", messages[last].content + ask)
    return (*messages[:last], fused, *messages[last + 1 :])
