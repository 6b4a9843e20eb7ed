"""The pipeline's knowledge stage: the passages a question needs from the device's
collections, put in the prompt, and what the privacy setting lets an escalation carry.

It runs first, before any route: the local model answers from the passages, and a
collection set to ``never`` keeps the whole request on the device (the route's ``hold``).
The question's embedding is made for the search and kept in memory only; a request with
knowledge is never cached or remembered (the answer depends on the passages).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ridgeline_core.runtime import ChatMessage
from ridgeline_core.wire import LocalDraft

from ..confidence.features import RetrievalEvidence
from ..decision import KnowledgeInfo
from ..knowledge.library import (
    Escalate,
    Library,
    Retrieval,
    Weights,
    cited,
    retrieve,
    with_passages,
)
from ..knowledge.library.outbound import Outbound, outbound
from ..knowledge.library.prompt import passages_text
from ..knowledge.redaction import Redactor

if TYPE_CHECKING:
    from .context import PreparedRequest, RequestContext

__all__ = ["KnowledgeUse", "retrieval_evidence", "retrieve_knowledge", "to_broker"]


@dataclass(frozen=True)
class KnowledgeUse:
    retrieval: Retrieval
    plain: list[ChatMessage]  # the conversation as asked, without the passages
    setting: Escalate | None  # the privacy setting that holds; None: nothing retrieved
    setting_from: str  # the collections it comes from
    vector: npt.NDArray[np.float32] | None = None  # the question's embedding, in memory only

    @property
    def used(self) -> bool:
        """Passages went into the prompt."""
        return bool(self.retrieval.passages)

    def evidence(self) -> RetrievalEvidence | None:
        """What the retrieval features of the confidence read (None: nothing retrieved)."""
        return retrieval_evidence(self.retrieval)

    @property
    def hold(self) -> str | None:
        """Why the request must stay on the device, when it must."""
        if self.setting != "never":
            return None
        return f"knowledge from {self.setting_from} never leaves the device (escalate = never)"

    def info(self, sent: Outbound | None, adapter: str | None = None) -> KnowledgeInfo:
        """The decision record's part: what was retrieved, and what the broker was sent."""
        found = self.retrieval
        return KnowledgeInfo(
            collections=[e.record() for e in found.experts],
            citations=[p.citation(n) for n, p in enumerate(found.passages, 1)],
            escalate=self.setting,
            escalate_from=self.setting_from,
            sent=None if sent is None else sent.sent,
            withheld=[] if sent is None else sent.withheld,
            redacted={} if sent is None else sent.redacted,
            retrieval_ms=found.ms,
            skipped=list(found.skipped),
            adapter=adapter,
        )

    def judge(self, library: Library, right: bool, source: str) -> bool:
        """Keep a judgment of the answer in the collections whose passages it used."""
        used = self.retrieval.used()
        if not used or self.vector is None:
            return False
        library.judge(used, self.vector, right, source)
        return True

    def citations(self, text: str) -> list[dict[str, object]]:
        used = set(cited(text, len(self.retrieval.passages)))
        return [
            {**p.citation(n), "cited": n in used} for n, p in enumerate(self.retrieval.passages, 1)
        ]


def retrieval_evidence(found: Retrieval) -> RetrievalEvidence | None:
    if not found.passages:
        return None
    return RetrievalEvidence(
        scores=tuple(p.score for p in found.passages),
        expert_scores=tuple(e.chunk for e in found.experts if e.chunk > float("-inf")),
        experts_chosen=sum(e.chosen for e in found.experts),
        passages=passages_text(found.passages),
    )


def retrieve_knowledge(ctx: RequestContext) -> None:
    """Retrieve for the request's question when it asks for knowledge; the local model's
    messages then carry the passages."""
    request = ctx.request
    names = request.options.knowledge
    if not names:
        return
    parts = ctx.parts
    settings = parts.settings.knowledge
    started = time.perf_counter()
    vector = ctx.vector if ctx.vector is not None else parts.embedder.embed_one(request.question)
    found = retrieve(
        parts.library, vector, names, experts=settings.experts,
        passages=settings.passages, min_similarity=settings.min_similarity,
        weights=Weights.of(settings),
    )  # fmt: skip
    ctx.record.knowledge_ms = (time.perf_counter() - started) * 1000
    ctx.record.knowledge = KnowledgeUse(
        found, list(request.messages), found.escalate(), found.policy_source(), vector
    )
    if found.passages:
        messages = with_passages(request.messages, found.passages)
        ctx.request = _with_expert(ctx, dataclasses.replace(request, messages=messages), found)


def _with_expert(
    ctx: RequestContext, request: PreparedRequest, found: Retrieval
) -> PreparedRequest:
    """The request with the chosen collection's model (unless the request named one) and
    its LoRA adapter (on the model it names, or any when it names none)."""
    expert = found.expert()
    if expert is None or (expert.model is None and expert.adapter is None):
        return request
    model = request.model
    if request.options.model is None and expert.model is not None:
        ctx.parts.catalog.get(expert.model)  # UnknownModelError: the collection names it
        model = ctx.record.model = expert.model
    params = request.params
    if expert.adapter is not None and expert.model in (None, model):
        params = dataclasses.replace(params, adapters=(expert.adapter,))
        ctx.record.adapter = expert.adapter.path
    return dataclasses.replace(request, model=model, params=params)


def to_broker(
    ctx: RequestContext, draft: LocalDraft | None
) -> tuple[list[ChatMessage], LocalDraft | None]:
    """The messages and draft an escalation sends: as they are without knowledge, else
    what the privacy setting allows (noted in the record)."""
    use = ctx.record.knowledge
    if use is None or use.setting is None:
        return ctx.request.messages, draft
    sent = outbound(
        use.setting, use.plain, ctx.request.messages, draft, len(use.retrieval.passages),
        Redactor(ctx.parts.settings.knowledge.redact_names),
    )  # fmt: skip
    ctx.record.outbound = sent
    return sent.messages, sent.draft
