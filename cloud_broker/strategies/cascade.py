"""Cascade: models in order, cheapest first; the first answer a verifier accepts is the
answer (the last model's is accepted without a verifier, since nothing comes after it).

Stage 0 is the device's draft, when the request carries one and the strategy verifies
drafts: a verifier model judges it (P(yes), one prefill), and an accepted draft is the
answer at once, with the verdict in the result for the device to learn from. A model
that fails (its upstream is down) is passed over with a note; ``max_cost`` stops the
cascade before a member it cannot afford, and the best answer so far is returned.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import replace

from ridgeline_core import errors
from ridgeline_core.runtime import FinishReason

from .base import Member, StrategyOutcome, Text, Verdict
from .members import Answer, Call
from .single import finish
from .verify import Verifier, judge

__all__ = ["Cascade", "judge_draft"]


class Cascade:
    kind = "cascade"

    def __init__(
        self,
        name: str,
        models: Sequence[str],
        verifier: Verifier,
        *,
        threshold: float,
        verify_draft: bool = True,
        draft_judge: str = "",
    ) -> None:
        self.name, self.models = name, tuple(models)
        self.verifier, self.threshold = verifier, threshold
        self.verify_draft = verify_draft
        self.draft_judge = draft_judge or self.models[0]

    async def run(self, call: Call) -> AsyncGenerator[Text | StrategyOutcome, None]:
        verdict = await judge_draft(call, self.draft_judge, self.threshold, self.verify_draft)
        if verdict is not None and verdict.accepted:
            assert call.draft is not None
            yield Text(call.draft.text, call.draft.model)
            draft = next(m for m in call.members if m.role == "draft")
            yield finish(call, self, draft, FinishReason.STOP, verdict)
            return
        chosen = await self._stages(call)
        yield Text(chosen.text, chosen.member.model)
        yield finish(call, self, chosen.member, chosen.outcome.finish_reason, verdict)

    async def _stages(self, call: Call) -> Answer:
        request = replace(call.request, signals=self.verifier.signals)
        answers: list[Answer] = []
        failures: list[str] = []
        for index, model in enumerate(self.models):
            try:
                answer = await call.answer(model, request)
            except errors.CostLimitError as exc:
                if not answers:
                    raise
                call.notes.append(f"max_cost stopped the cascade before {model}: {exc}")
                break
            except (errors.UnavailableError, errors.OverloadedError) as exc:
                failures.append(f"{model}: {exc}")
                call.notes.append(f"{model} was passed over: {exc}")
                continue
            answers.append(answer)
            if index == len(self.models) - 1 or await self._accepts(call, answer):
                answer.member.accepted = True
                return answer
        return _best(call, answers, failures)

    async def _accepts(self, call: Call, answer: Answer) -> bool:
        try:
            score = await self.verifier.score(call, answer)
        except errors.CostLimitError as exc:
            call.notes.append(f"max_cost stopped verification of {answer.member.model}: {exc}")
            answer.member.score = None
            return True  # nothing further is affordable either
        except (errors.UnavailableError, errors.UnsupportedError) as exc:
            answer.member.note = f"not verified: {exc}"
            return False
        answer.member.score = score
        if score is not None and score >= self.threshold:
            return True
        if score is not None:
            answer.member.note = f"score {score:.2f} below threshold {self.threshold:g}"
        return False


async def judge_draft(
    call: Call, judge_model: str, threshold: float, enabled: bool
) -> Verdict | None:
    """Stage 0: ``judge_model``'s verdict on the device's draft (None: no draft to judge,
    or it could not be judged; the cascade then runs as without one)."""
    draft = call.draft
    if not (enabled and draft is not None and draft.text.strip()):
        return None
    record = call.record(Member(draft.model or "device", "draft"))
    record.completion_tokens = draft.completion_tokens
    try:
        score = await judge(call, judge_model, draft.text)
    except (errors.CostLimitError, errors.UnavailableError, errors.UnsupportedError) as exc:
        record.note = f"not verified: {exc}"
        call.notes.append(f"the draft was not verified: {exc}")
        return None
    record.score, record.accepted = score, score >= threshold
    if not record.accepted:
        record.note = f"score {score:.2f} below threshold {threshold:g}"
    return Verdict(record.accepted, score, f"verifier:{judge_model}")


def _best(call: Call, answers: list[Answer], failures: list[str]) -> Answer:
    """No answer was accepted: the best-scored one (the latest on ties)."""
    if not answers:
        raise errors.UnavailableError("no model of the cascade answered: " + "; ".join(failures))
    best = max(enumerate(answers), key=lambda pair: (pair[1].member.score or 0.0, pair[0]))[1]
    best.member.accepted = True
    call.notes.append(f"no answer reached the threshold; answered with {best.member.model}")
    return best
