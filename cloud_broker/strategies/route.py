"""Route: one model per request, out of N, by rules or by a learned router.

Only models whose context holds the prompt and ``max_tokens`` are candidates, and only
those ``max_cost`` allows. Rules are tried in order (task hint, prompt length); the first
whose model is a candidate wins, else the first candidate (models are listed cheapest
first). The learned router predicts each candidate's P(correct) on the broker itself
(sentence-encoder and prompt features, :mod:`cloud_broker.router`) and picks the one with
the best P(correct) - cost / willingness_to_pay: a larger willingness picks stronger,
dearer models; 0 picks the cheapest.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Protocol

from ridgeline_core import errors

from ..strategy_settings import RuleSettings
from .base import StrategyOutcome, Text
from .costs import estimate_prompt_tokens
from .members import Answer, Call
from .single import finish, stream_member

__all__ = ["Predictor", "Route", "choose"]


class Predictor(Protocol):
    def predict(self, prompt: str) -> dict[str, float]:
        """P(correct) per model for ``prompt``."""


class Route:
    kind = "route"

    def __init__(
        self,
        name: str,
        models: Sequence[str],
        contexts: Mapping[str, int],
        *,
        rules: Sequence[RuleSettings] = (),
        router: Predictor | None = None,
        willingness_to_pay: float = 1.0,
    ) -> None:
        self.name, self.models = name, tuple(models)
        self._contexts, self._rules, self._router = contexts, tuple(rules), router
        self._wtp = willingness_to_pay

    async def run(self, call: Call) -> AsyncGenerator[Text | StrategyOutcome, None]:
        model, score, why = await self.choose(call)
        call.notes.append(f"routed to {model}: {why}")
        async with contextlib.aclosing(stream_member(call, model)) as items:
            async for item in items:
                if isinstance(item, Answer):
                    item.member.score = score
                    yield finish(call, self, item.member, item.outcome.finish_reason)
                else:
                    yield item

    async def choose(self, call: Call) -> tuple[str, float | None, str]:
        """The model, its predicted P(correct) (learned) and why it was chosen."""
        candidates = self._candidates(call)
        if self._router is None:
            return self._by_rules(call, candidates)
        # the question is the last user message (earlier turns may be examples)
        prompt = next(m.content for m in reversed(call.request.messages) if m.role == "user")
        predicted = await asyncio.to_thread(self._router.predict, prompt)
        wtp = self._wtp if call.willingness_to_pay is None else call.willingness_to_pay
        costs = {model: call.estimate(model) for model in candidates}
        model = choose(predicted, costs, wtp)
        return model, predicted[model], f"P(correct) {predicted[model]:.2f} at willingness {wtp:g}"

    def _candidates(self, call: Call) -> list[str]:
        needed = estimate_prompt_tokens(call.request.messages) + call.request.params.max_tokens
        fitting = [m for m in self.models if needed <= (self._contexts.get(m) or needed)]
        if not fitting:
            raise errors.PromptTooLongError(
                f"the prompt needs about {needed} tokens with max_tokens; no model of "
                f"strategy {self.name!r} has that much context"
            )
        affordable = [m for m in fitting if call.meter.affordable(call.estimate(m))]
        if not affordable:
            cheapest = min(call.estimate(m) for m in fitting)
            raise errors.CostLimitError(
                f"max_cost {call.meter.max_cost:g} is below the cheapest model of strategy "
                f"{self.name!r} (it may cost {cheapest:.6g})",
                param="max_cost",
            )
        return affordable

    def _by_rules(self, call: Call, candidates: list[str]) -> tuple[str, None, str]:
        chars = sum(len(m.content) for m in call.request.messages)
        for index, rule in enumerate(self._rules):
            if rule.model in candidates and _matches(rule, call.task, chars):
                return rule.model, None, f"rule {index + 1}"
        return candidates[0], None, "no rule matched: the first model that fits"


def _matches(rule: RuleSettings, task: str, chars: int) -> bool:
    if rule.task and rule.task != task:
        return False
    if chars < rule.min_prompt_chars:
        return False
    return not (rule.max_prompt_chars and chars > rule.max_prompt_chars)


def choose(predicted: Mapping[str, float], costs: Mapping[str, float], wtp: float) -> str:
    """The model with the best P(correct) - cost / wtp (wtp 0: the cheapest; ties: the
    earlier model, as ``costs`` lists them)."""
    models = list(costs)
    if wtp <= 0:
        return min(models, key=lambda m: (costs[m], models.index(m)))
    return max(models, key=lambda m: (predicted.get(m, 0.0) - costs[m] / wtp, -models.index(m)))
