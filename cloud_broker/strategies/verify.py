"""Verifiers: how a cascade decides whether an answer is good enough to stop.

- ``confidence``: the answering model's own token probabilities (llama.cpp always has them;
  an OpenAI-compatible upstream when it returns logprobs). Calibrated to P(correct) when the
  strategy has a calibration (from ``cloud-broker router train``), else the geometric mean
  of the answer's token probabilities.
- ``agreement``: ``samples`` more samples of the same model; the score is the share that
  vote like the answer.
- ``verifier:<model>``: that model is asked whether the answer is correct, and the score is
  its P(yes) against P(no) for the first token: one forward pass, no generation. This is
  also how the device's draft is judged (one prefill instead of a generation).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Protocol

from ridgeline_core import errors
from ridgeline_core.runtime import ChatMessage

from ..backends import AnswerSignals
from .members import Answer, Call
from .vote import vote_key

__all__ = [
    "AgreementVerifier",
    "Calibrator",
    "ConfidenceVerifier",
    "JudgeVerifier",
    "Verifier",
    "judge",
    "judge_messages",
]

Calibrator = Callable[[str, AnswerSignals], "float | None"]

# a few worked examples: small models judge far better with them than from an
# instruction alone (measured in benchmarks/strategies.py)
_EXAMPLES = (
    ("What is the capital of Italy?", "Rome", "Yes"),
    ("How many legs does a spider have?", "6", "No"),
    ("What is 3 plus 4?", "7", "Yes"),
    ("Which planet is the largest in the Solar System?", "Mars", "No"),
)


class Verifier(Protocol):
    label: str  # as results and ListModels show it
    signals: bool  # needs the answer's token signals

    async def score(self, call: Call, answer: Answer) -> float | None:
        """P(the answer is acceptable) in [0, 1]; None when this verifier cannot tell."""


def judge_messages(messages: tuple[ChatMessage, ...], answer: str) -> tuple[ChatMessage, ...]:
    """The question put to a verifier model about ``answer``: worked examples, then the
    call's question and ``answer``; the verifier's next word is Yes or No."""
    question = next((m.content for m in reversed(messages) if m.role == "user"), "")
    shots = "".join(
        f"Question: {q}\nProposed answer: {a}\nCorrect: {verdict}\n\n"
        for q, a, verdict in _EXAMPLES
    )
    text = (
        "Decide whether each proposed answer is correct.\n\n"
        f"{shots}Question: {question.strip()}\nProposed answer: {answer.strip()}\nCorrect:"
    )
    return (ChatMessage("user", text),)


async def judge(call: Call, model: str, answer: str) -> float:
    """``model``'s P(yes) that ``answer`` answers the call's question, against P(no)."""
    probe, member = await call.probe(model, judge_messages(call.request.messages, answer), _YN)
    yes, no = probe.probs
    score = yes / (yes + no) if yes + no > 0 else 0.5
    member.score = score
    return score


_YN = ("Yes", "No")


class JudgeVerifier:
    signals = False

    def __init__(self, model: str) -> None:
        self.model = model
        self.label = f"verifier:{model}"

    async def score(self, call: Call, answer: Answer) -> float | None:
        return await judge(call, self.model, answer.text)


class ConfidenceVerifier:
    label = "confidence"
    signals = True

    def __init__(self, calibrator: Calibrator | None = None) -> None:
        self._calibrator = calibrator

    async def score(self, call: Call, answer: Answer) -> float | None:
        signals = answer.outcome.signals
        if signals is None or not signals.tokens:
            answer.member.note = "no token signals to judge by"
            return None
        calibrated = None
        if self._calibrator is not None:
            calibrated = await asyncio.to_thread(self._calibrator, answer.member.model, signals)
        return calibrated if calibrated is not None else math.exp(signals.mean_logprob)


class AgreementVerifier:
    label = "agreement"
    signals = False

    def __init__(self, samples: int, temperature: float) -> None:
        self.samples, self.temperature = samples, temperature

    async def score(self, call: Call, answer: Answer) -> float | None:
        key = vote_key(answer.text)
        agreeing = counted = 0
        for index in range(self.samples):
            request = call.sampled(self.temperature, _seed(call, index))
            try:
                sample = await call.answer(answer.member.model, request, role="sample")
            except errors.CostLimitError as exc:
                call.notes.append(f"agreement stopped after {counted} sample(s): {exc}")
                break
            sample.member.vote = vote_key(sample.text)
            sample.member.accepted = sample.member.vote == key
            agreeing += sample.member.accepted
            counted += 1
        return agreeing / counted if counted else None


def _seed(call: Call, index: int) -> int:
    base = call.request.params.seed
    return (0 if base is None else base) + index + 1
