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

from ..decision import BrokerInfo, plain
from ..link.escalation import Draft, EscalationFailed, answered_info, failed_info
from ..routing.route import Judged, LinkState, Route, route
from .options import RequestOptions

if TYPE_CHECKING:
    from ..knowledge.specialists import Prediction, Specialist
    from ..parts import EdgeParts

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


def classify(parts: EdgeParts, name: str, text: str, options: RequestOptions) -> Classification:
    """The specialist ``name``'s label for ``text``, or the broker's choice among its labels
    when :func:`~edge_agent.routing.route.route` says escalate (``options``: ``mode``,
    ``threshold``, ``deadline_s``)."""
    started = time.perf_counter()
    _check_text(text)
    try:
        check_name(name)
    except ManifestError as exc:  # a name from the request: a bad request, not a bad model
        raise InvalidRequestError(str(exc)) from None
    settings = parts.settings
    mode = options.mode or settings.policy.mode
    specialist = parts.specialists.get(name)
    tau = options.threshold
    if tau is None:
        tau = settings.specialists.threshold
    if tau is None:
        tau = specialist.record.threshold
    prediction = specialist.predict(text)
    local_ms = (time.perf_counter() - started) * 1000
    run = _Run(specialist, prediction, tau, mode, local_ms, started)
    gate = parts.policy.evaluate(parts.sampler.snapshot()).gate
    link = LinkState("none") if mode == "local" else parts.link.state()
    evidence = Judged(prediction.probability, "probability")
    decided = route(evidence, tau=tau, mode=mode, link=link, gate=gate)
    if decided.action != "escalate":
        return run.local(decided)
    deadline_s = options.deadline_s or settings.escalation.deadline_s
    return _escalate(parts, run, decided, text, deadline_s)


def _check_text(text: str) -> None:
    if not isinstance(text, str):
        raise InvalidRequestError("text must be a string")
    if not text.strip():
        raise EmptyPromptError("the text to classify is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidRequestError(f"text is {len(text)} characters; at most {MAX_TEXT_CHARS}")


def _escalate(
    parts: EdgeParts, run: _Run, decided: Route, text: str, deadline_s: float
) -> Classification:
    link = parts.link.link()
    assert link is not None, "route() escalates only over a usable link"
    specialist, prediction = run.specialist, run.prediction
    broker_started = time.perf_counter()
    params = SamplingParams(max_tokens=32, temperature=0.0, choices=tuple(specialist.labels))
    draft = Draft(prediction.label, prediction.probability, f"specialist:{specialist.name}", 1)
    try:
        cloud = link.escalate(
            broker_messages(specialist, text), params, draft=draft, deadline_s=deadline_s
        )
    except EscalationFailed as failure:
        run.broker_ms = (time.perf_counter() - broker_started) * 1000
        run.broker = failed_info(link, failure)
        return run.local(decided.failed(f"escalation failed ({failure.reason})"))
    run.broker_ms = (time.perf_counter() - broker_started) * 1000
    parts.budget.record(cloud.prompt_tokens + cloud.completion_tokens)
    run.broker = answered_info(link, cloud)
    label = cloud.text.strip()
    if label not in specialist.labels:  # the broker promised one of the choices
        return run.local(decided.failed(f"the broker answered {label!r}, not one of the labels"))
    done = decided.escalated(f"{cloud.model} chose among the labels")
    return run.answer(label, None, "cloud", done.reason)


class _Run:
    def __init__(
        self,
        specialist: Specialist,
        prediction: Prediction,
        tau: float,
        mode: str,
        local_ms: float,
        started: float,
    ) -> None:
        self.specialist = specialist
        self.prediction = prediction
        self.tau = tau
        self.mode = mode
        self.local_ms = local_ms
        self.started = started
        self.broker: BrokerInfo | None = None
        self.broker_ms: float | None = None

    def local(self, decided: Route) -> Classification:
        p = self.prediction
        path: ClassifyPath = "local-degraded" if decided.path == "local-degraded" else "local"
        return self.answer(p.label, p.probability, path, decided.reason)

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
