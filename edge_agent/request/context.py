"""What every stage of one request shares: the request, the agent's parts, its record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ridgeline_core.cancel import CancelToken
from ridgeline_core.progress import Progress
from ridgeline_core.runtime import ChatMessage, SamplingParams

from ..routing.route import Evidence, LinkState, Route, route
from .options import Mode, RequestOptions
from .record import Record

if TYPE_CHECKING:
    from ..knowledge.memory import Vectors
    from ..parts import EdgeParts

__all__ = ["PreparedRequest", "RequestContext"]


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
        return route(evidence, tau=r.tau, mode=mode, link=link, gate=r.threshold.gate)

    def check_cancel(self) -> None:
        if self.cancel is not None:
            self.cancel.check()
