"""Classify a text with a specialist; escalate to the broker's LLM below the threshold.

The local answer is the specialist's label and its calibrated probability. Below the
threshold (the one chosen at training unless settings or the request say otherwise) the
text goes to the broker with the label set as ``choices``: the broker's model answers with
exactly one of the labels. The decision record says which path answered and why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ridgeline_core.errors import EmptyPromptError, InvalidRequestError, ManifestError
from ridgeline_core.runtime import ChatMessage, SamplingParams
from ridgeline_core.store import check_name

from ..link.escalation import Draft, EscalationFailed, answered_info, failed_info
from ..request.decision import BrokerInfo, plain
from ..routing.policy import GATE_BUDGET_SPENT

if TYPE_CHECKING:
    from ..agent import EdgeAgent
    from .specialists import Prediction, Specialist

__all__ = ["Classification", "ClassifyDecision", "classify"]

ClassifyPath = Literal["local", "cloud", "local-degraded"]
MAX_TEXT_CHARS = 8192


@dataclass(frozen=True)
class ClassifyDecision:
    path: ClassifyPath
    mode: str
    reason: str
    threshold: float
    local_label: str
    local_probability: float
    top: list[dict[str, Any]]  # the specialist's best labels: label, probability
    broker: BrokerInfo | None
    local_ms: float
    broker_ms: float | None
    total_ms: float


@dataclass(frozen=True)
class Classification:
    specialist: str
    label: str
    probability: float | None  # the specialist's calibrated probability; None from the broker
    source: ClassifyPath
    labels: list[str] = field(repr=False)
    decision: ClassifyDecision

    def to_dict(self) -> dict[str, Any]:
        return plain(self)  # type: ignore[no-any-return]


def broker_messages(specialist: Specialist, text: str) -> list[ChatMessage]:
    """What the broker's model reads: the task, the labels, the text."""
    task = specialist.record.description or f"the {specialist.name} classifier's task"
    return [
        ChatMessage(
            "system",
            "You are a text classifier. Reply with exactly one label from the list, nothing else.",
        ),
        ChatMessage(
            "user",
            f"Task: {task}\nLabels: {', '.join(specialist.labels)}\nText: {text}\nLabel:",
        ),
    ]


def classify(
    agent: EdgeAgent,
    name: str,
    text: str,
    *,
    threshold: float | None = None,
    mode: str | None = None,
    deadline_s: float | None = None,
) -> Classification:
    started = time.perf_counter()
    if not isinstance(text, str):
        raise InvalidRequestError("text must be a string")
    if not text.strip():
        raise EmptyPromptError("the text to classify is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidRequestError(f"text is {len(text)} characters; at most {MAX_TEXT_CHARS}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise InvalidRequestError(f"threshold {threshold} is not in [0, 1]")
    if deadline_s is not None and not deadline_s > 0:
        raise InvalidRequestError(f"deadline_s {deadline_s} must be positive")
    try:
        check_name(name)
    except ManifestError as exc:  # a name from the request: a bad request, not a bad model
        raise InvalidRequestError(str(exc)) from None
    mode = mode or agent.settings.policy.mode
    if mode not in ("auto", "local", "cloud"):
        raise InvalidRequestError(f"mode {mode!r} is not one of auto, local, cloud")
    specialist = agent.specialists.get(name)
    tau = threshold
    if tau is None:
        tau = agent.settings.specialists.threshold
    if tau is None:
        tau = specialist.record.threshold
    prediction = specialist.predict(text)
    local_ms = (time.perf_counter() - started) * 1000
    run = _Run(agent, specialist, text, prediction, tau, mode, local_ms, started)
    if mode == "local":
        return run.local("local", "mode local never escalates")
    if mode == "auto" and prediction.probability >= tau:
        return run.local("local", f"probability {prediction.probability:.2f} ≥ τ {tau:.2f}")
    why = (
        "mode cloud always escalates"
        if mode == "cloud"
        else f"probability {prediction.probability:.2f} < τ {tau:.2f}"
    )
    escalator = agent.broker()
    if escalator is None:
        return run.local("local-degraded", f"{why}, but {agent.broker_missing or 'no broker'}")
    gate = agent.policy.evaluate(agent.sampler.snapshot()).gate
    if gate == GATE_BUDGET_SPENT:
        return run.local("local", f"{why}, but {gate}")
    ok, blocked = escalator.available()
    if not ok:
        return run.local("local-degraded", f"{why}, but {blocked}")
    broker_started = time.perf_counter()
    params = SamplingParams(max_tokens=32, temperature=0.0, choices=tuple(specialist.labels))
    try:
        cloud = escalator.escalate(
            broker_messages(specialist, text),
            params,
            draft=Draft(prediction.label, prediction.probability, f"specialist:{name}", 1),
            deadline_s=agent.settings.escalation.deadline_s if deadline_s is None else deadline_s,
        )
    except EscalationFailed as failure:
        run.broker_ms = (time.perf_counter() - broker_started) * 1000
        run.broker = failed_info(escalator, failure)
        return run.local("local-degraded", f"{why}; escalation failed ({failure.reason})")
    run.broker_ms = (time.perf_counter() - broker_started) * 1000
    agent.budget.record(cloud.prompt_tokens + cloud.completion_tokens)
    run.broker = answered_info(escalator, cloud)
    label = cloud.text.strip()
    if label not in specialist.labels:  # the broker promised one of the choices
        return run.local(
            "local-degraded", f"{why}; the broker answered {label!r}, not one of the labels"
        )
    return run.answer(label, None, "cloud", f"{why}: {cloud.model} chose among the labels")


class _Run:
    def __init__(
        self,
        agent: EdgeAgent,
        specialist: Specialist,
        text: str,
        prediction: Prediction,
        tau: float,
        mode: str,
        local_ms: float,
        started: float,
    ) -> None:
        self.agent = agent
        self.specialist = specialist
        self.text = text
        self.prediction = prediction
        self.tau = tau
        self.mode = mode
        self.local_ms = local_ms
        self.started = started
        self.broker: BrokerInfo | None = None
        self.broker_ms: float | None = None

    def local(self, path: ClassifyPath, reason: str) -> Classification:
        p = self.prediction
        return self.answer(p.label, p.probability, path, reason)

    def answer(
        self, label: str, probability: float | None, path: ClassifyPath, reason: str
    ) -> Classification:
        p = self.prediction
        decision = ClassifyDecision(
            path=path,
            mode=self.mode,
            reason=reason,
            threshold=self.tau,
            local_label=p.label,
            local_probability=p.probability,
            top=[{"label": label_, "probability": prob} for label_, prob in p.top],
            broker=self.broker,
            local_ms=self.local_ms,
            broker_ms=self.broker_ms,
            total_ms=(time.perf_counter() - self.started) * 1000,
        )
        return Classification(
            specialist=self.specialist.name,
            label=label,
            probability=probability,
            source=path,
            labels=list(self.specialist.labels),
            decision=decision,
        )
