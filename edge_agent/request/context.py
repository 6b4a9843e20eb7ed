"""What every stage of one request shares: the request, the agent's parts, its record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ridgeline_core.cancel import CancelToken
from ridgeline_core.progress import Progress
from ridgeline_core.runtime import ChatMessage, SamplingParams
from ridgeline_core.store import ManifestCatalog

from ..routing.route import Evidence, LinkState, Route, route
from ..settings import EdgeSettings
from .conversation import Prompt, conversation
from .options import Mode, RequestOptions
from .record import Record

if TYPE_CHECKING:
    from ..knowledge.memory import Vectors
    from ..parts import EdgeParts

__all__ = ["PreparedRequest", "RequestContext", "prepare_request"]


@dataclass(frozen=True)
class PreparedRequest:
    """A checked request: the conversation, the model, its sampling, its options."""

    messages: list[ChatMessage]
    question: str  # the last user message: what confidence and pre-route read
    model: str
    params: SamplingParams
    mode: Mode
    deadline_s: float
    options: RequestOptions


def prepare_request(
    settings: EdgeSettings, catalog: ManifestCatalog, prompt: Prompt, options: RequestOptions
) -> PreparedRequest:
    """The request checked before any work (InvalidRequestError, UnknownModelError)."""
    messages, question = conversation(prompt, settings.generation.system_prompt)
    if options.model is not None:
        catalog.get(options.model)  # UnknownModelError, ManifestError for a path-like name
    deadline_s = options.deadline_s
    return PreparedRequest(
        messages=messages,
        question=question,
        model=options.model or settings.models.default,
        params=options.sampling(settings.generation.sampling()),
        mode=options.mode or settings.policy.mode,
        deadline_s=settings.escalation.deadline_s if deadline_s is None else deadline_s,
        options=options,
    )


@dataclass
class RequestContext:
    parts: EdgeParts
    request: PreparedRequest
    record: Record
    live: bool  # the consumer handles Reset: broker text may stream as it arrives
    cancel: CancelToken | None
    progress: Progress
    vector: Vectors | None = None  # the question's embedding (cache, pre-route memory)

    def route(self, evidence: Evidence) -> Route:
        """:func:`~edge_agent.routing.route.route` for this request, as things stand now."""
        mode = self.request.mode
        # route() never reads the link in mode local: do not set one up for it
        link = LinkState("none") if mode == "local" else self.parts.link.state()
        r = self.record
        hold = None if r.knowledge is None else r.knowledge.hold
        if hold is not None:
            link = LinkState("none")  # it stays here: no need to reach the broker
        return route(evidence, tau=r.tau, mode=mode, link=link, gate=r.threshold.gate, hold=hold)

    def check_cancel(self) -> None:
        if self.cancel is not None:
            self.cancel.check()
