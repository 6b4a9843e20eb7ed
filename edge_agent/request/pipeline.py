"""The edge request as one pipeline: a generator of typed events.

::

    prepared request ─► cache? ─► route(·) ─► pre-route ─► route(·) ─► local model ─► route(·)
                                    │                        │                          │
                                    └────────── escalate ◄───┴──────────────────────────┘
                                                   │ fails → local answer, local-degraded

Every branch asks the one pure :func:`~edge_agent.routing.route.route`; the pipeline only
carries out what it says through its stages (:mod:`.cache_stage`, :mod:`.local_step`,
:mod:`.broker_stage`), records each one (:class:`~.record.Record`) and yields
:mod:`events <.events>`: text as it becomes final, a reset when streamed broker text must
be dropped, the routing decision, and the answer last. ``ask`` drains it; streaming
callers forward the events. It runs in the consumer's thread: no thread per request.

Local text streams live only when it is final (the route no longer depends on it); broker
text streams live only to a consumer that handles :class:`~.events.Reset` (``live``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING

from ridgeline_core.cancel import CancelToken
from ridgeline_core.progress import NULL_PROGRESS, Progress

from ..routing.route import Predicted
from . import cache_stage
from .answer import Answer
from .broker_stage import run_broker_stage
from .context import PreparedRequest, RequestContext
from .events import Decided, Done, Event, TextChunk
from .knowledge_stage import retrieve_knowledge
from .local import LocalResult
from .local_step import run_local_stage
from .record import Record, local_answer

if TYPE_CHECKING:
    from ..parts import EdgeParts

__all__ = ["Pipeline", "PreparedRequest"]

log = logging.getLogger(__name__)


class Pipeline:
    """One request through the parts; iterate :meth:`events` once."""

    def __init__(
        self,
        parts: EdgeParts,
        request: PreparedRequest,
        *,
        live: bool = False,
        cancel: CancelToken | None = None,
        progress: Progress = NULL_PROGRESS,
    ) -> None:
        record = _open_record(parts, request)
        self.context = RequestContext(parts, request, record, live, cancel, progress)

    @property
    def record(self) -> Record:
        return self.context.record

    def events(self) -> Iterator[Event]:
        ctx = self.context
        request = ctx.request
        retrieve_knowledge(ctx)
        if (
            request.options.private
            or request.mode == "local"
            or request.options.knowledge
            or not _caching(ctx)
        ):
            answer = yield from self._answer()
            yield Done(answer)
            return
        cache, hit = cache_stage.look_up(ctx)
        if hit is not None:
            yield from cache_stage.answer_from_cache(ctx, hit)
            return
        answer = yield from self._answer()
        if cache is not None:
            cache_stage.remember(ctx, cache, answer)
        yield Done(answer)

    def _answer(self) -> Generator[Event, None, Answer]:
        ctx = self.context
        decided = ctx.route(None)
        ctx.record.gate = decided.gate
        if decided.action == "predict":
            decided = ctx.route(_predict(ctx))
        local: LocalResult | None = None
        shown = False  # the local text streamed as it was generated
        if decided.action == "generate":
            local = yield from run_local_stage(ctx, decided)
            shown = decided.live
            decided = ctx.route(local.evidence)
            ctx.record.gate = decided.gate or ctx.record.gate
        if decided.action == "escalate":
            answer: Answer = yield from run_broker_stage(ctx, decided, local)
            return answer
        assert local is not None, "route() answers locally only after the local model ran"
        yield Decided(decided.path or "local", decided.reason)
        if not shown and local.run.text:
            yield TextChunk(local.run.text)
        return local_answer(ctx.record, decided)


def _open_record(parts: EdgeParts, request: PreparedRequest) -> Record:
    """The request's record, opened now: the clock starts, and τ is fixed from the
    telemetry of this moment (or the request's own threshold)."""
    started = time.perf_counter()
    snapshot = parts.sampler.snapshot()
    threshold = parts.policy.evaluate(snapshot)
    tau = request.options.threshold
    record = Record(
        snapshot=snapshot,
        threshold=threshold,
        tau=threshold.value if tau is None else tau,
        mode=request.mode,
        model=request.model,
        scorer=parts.confidence.scorer_name,
        started=started,
    )
    record.decide_ms = (time.perf_counter() - started) * 1000
    return record


def _caching(ctx: RequestContext) -> bool:
    return ctx.parts.settings.cache.enabled


def _predict(ctx: RequestContext) -> Predicted:
    """The pre-route's guess; with the outcome memory on, from the question's embedding
    too (the cache's, if it made one). The memory is advice: when the embedder or the
    memory fails, the rules predict alone. A private question is never embedded."""
    preroute, question = ctx.parts.preroute, ctx.request.question
    started = time.perf_counter()
    if preroute.memory is None or ctx.request.options.private:
        prediction = preroute.predict(question)
    else:
        try:
            if ctx.vector is None:
                ctx.vector = ctx.parts.embedder.embed_one(question)
            prediction = preroute.predict(question, ctx.vector, ctx.request.model)
        except Exception as exc:  # whatever the embedder raised, an answer still comes
            log.warning("pre-route memory unavailable: %s: %s", type(exc).__name__, exc)
            prediction = preroute.predict(question)
    ctx.record.prediction = prediction
    ctx.record.preroute_ms = (time.perf_counter() - started) * 1000
    settings = preroute.settings
    return Predicted(
        prediction.confidence, prediction.describe(), settings.skip_margin, settings.enabled
    )
