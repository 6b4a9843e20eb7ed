"""The edge request as one pipeline: a generator of typed events.

::

    prepared request ─► cache? ─► route(·) ─► pre-route ─► route(·) ─► local model ─► route(·)
                                    │                        │                          │
                                    └────────── escalate ◄───┴──────────────────────────┘
                                                   │ fails → local answer, local-degraded

Every branch asks the one pure :func:`~edge_agent.routing.route.route`; the pipeline only
carries out what it says, records each stage (:class:`~.record.Record`) and yields
:mod:`events <.events>`: text as it becomes final, a reset when streamed broker text must
be dropped, the routing decision, and the answer last. ``ask`` drains it; streaming
callers forward the events. It runs in the consumer's thread: no thread per request.

Local text streams live only when it is final (the route no longer depends on it); broker
text streams live only to a consumer that handles :class:`~.events.Reset` (``live``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ridgeline_core.cancel import CancelToken
from ridgeline_core.progress import NULL_PROGRESS, Progress
from ridgeline_core.runtime import ChatMessage, Runtime, SamplingParams, TokenSignals

from ..confidence.calibrated import ModelConfidence
from ..link.escalation import (
    BrokerLink,
    CloudAnswer,
    Draft,
    EscalationFailed,
    answered_info,
    failed_info,
)
from ..routing.route import Evidence, LinkState, Predicted, Route, route
from .answer import Answer
from .decision import AbortInfo, CacheInfo
from .events import Decided, Done, Event, Reset, TextChunk
from .local import LocalResult, LocalRun, generate_local
from .options import Mode, RequestOptions
from .record import Record

if TYPE_CHECKING:
    from ..knowledge.cache import CacheHit, SemanticCache
    from ..knowledge.memory import Vectors
    from ..parts import EdgeParts

__all__ = ["Pipeline", "PreparedRequest"]

log = logging.getLogger(__name__)

Steps = Generator[Event, None, Any]


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
        self.parts = parts
        self.request = request
        self.live = live  # the consumer handles Reset: broker text may stream live
        self.cancel = cancel
        self.progress = progress
        started = time.perf_counter()
        snapshot = parts.sampler.snapshot()
        threshold = parts.policy.evaluate(snapshot)
        tau = request.options.threshold
        self.record = Record(
            snapshot=snapshot,
            threshold=threshold,
            tau=threshold.value if tau is None else tau,
            mode=request.mode,
            model=request.model,
            scorer=parts.confidence.scorer_name,
            started=started,
        )
        self.record.decide_ms = (time.perf_counter() - started) * 1000
        self._vector: Vectors | None = None  # the prompt's embedding (cache, pre-route memory)

    def events(self) -> Iterator[Event]:
        request = self.request
        if request.options.private or request.mode == "local" or not self._caching():
            answer = yield from self._answer()
            yield Done(answer)
            return
        cache, hit = self._lookup()
        if hit is not None:
            yield from self._from_cache(hit)
            return
        answer = yield from self._answer()
        if cache is not None:
            self._store(cache, answer)
        yield Done(answer)

    # -- routing -----------------------------------------------------------------------

    def _route(self, evidence: Evidence) -> Route:
        mode = self.request.mode
        # route() never reads the link in mode local: do not set one up for it
        link = LinkState("none") if mode == "local" else self.parts.link.state()
        r = self.record
        return route(evidence, tau=r.tau, mode=mode, link=link, gate=r.threshold.gate)

    def _answer(self) -> Steps:
        decided = self._route(None)
        self.record.gate = decided.gate
        if decided.action == "predict":
            decided = self._route(self._predict())
        local: LocalResult | None = None
        shown = False  # the local text streamed as it was generated
        if decided.action == "generate":
            local = yield from self._generate(decided)
            shown = decided.live
            decided = self._route(local.evidence)
            self.record.gate = decided.gate or self.record.gate
        if decided.action == "escalate":
            answer: Answer = yield from self._escalate(decided, local)
            return answer
        assert local is not None, "route() answers locally only after the local model ran"
        yield Decided(decided.path or "local", decided.reason)
        if not shown:
            yield from _text(local.run.text)
        return self.record.local_answer(decided)

    def _predict(self) -> Predicted:
        """The pre-route's guess; with the outcome memory on, from the prompt's embedding
        too (the cache's, if it made one). The memory is advice: when the embedder or the
        memory fails, the rules predict alone. A private prompt is never embedded."""
        preroute, question = self.parts.preroute, self.request.question
        started = time.perf_counter()
        if preroute.memory is None or self.request.options.private:
            prediction = preroute.predict(question)
        else:
            try:
                if self._vector is None:
                    self._vector = self.parts.embedder.embed_one(question)
                prediction = preroute.predict(question, self._vector, self.request.model)
            except Exception as exc:  # whatever the embedder raised, an answer still comes
                log.warning("pre-route memory unavailable: %s: %s", type(exc).__name__, exc)
                prediction = preroute.predict(question)
        record = self.record
        record.prediction = prediction
        record.preroute_ms = (time.perf_counter() - started) * 1000
        settings = preroute.settings
        return Predicted(
            prediction.confidence, prediction.describe(), settings.skip_margin, settings.enabled
        )

    # -- the local model ------------------------------------------------------------------

    def _generate(self, decided: Route) -> Steps:
        parts, request, record = self.parts, self.request, self.record
        self._check_cancel()
        started = time.perf_counter()
        with parts.runtimes.lease(request.model, self.progress, self.cancel) as runtime:
            load_s = time.perf_counter() - started
            confidence = parts.confidence.for_model(request.model, runtime)
            should_abort = self._abort_check(confidence) if decided.abort else None
            steps = generate_local(
                runtime, request.messages, request.params, should_abort, self.cancel
            )
            run: LocalRun = yield from _forward(steps, decided.live)
            parts.local_speed.record(run.stats.tokens_per_s, run.stats.time_to_first_token_s)
            local = self._judge(run, runtime, confidence, decided, load_s)
        record.local = local
        record.local_ms += (time.perf_counter() - started) * 1000
        parts.sampler.refresh()
        return local

    def _judge(
        self,
        run: LocalRun,
        runtime: Runtime,
        confidence: ModelConfidence,
        decided: Route,
        load_s: float,
    ) -> LocalResult:
        if run.aborted_at is not None:
            running = confidence.running(run.signals)
            abort = AbortInfo(run.aborted_at, running, self._abort_limit())
            return LocalResult(run, running, load_s, abort, confidence.running_info(run.signals))
        if decided.probes or self.parts.settings.confidence.probes == "always":
            self._check_cancel()
            scored = confidence.score(runtime, run.evidence(self.request.question))
            return LocalResult(run, scored.confidence, load_s, None, scored.info)
        info = confidence.running_info(run.signals)
        why = f"probes skipped: {decided.gate or 'the route does not depend on it'}"
        info = dataclasses.replace(info, note=f"{info.note}; {why}" if info.note else why)
        return LocalResult(run, confidence.running(run.signals), load_s, None, info)

    def _abort_limit(self) -> float:
        return self.record.tau - self.parts.settings.abort.margin

    def _abort_check(
        self, confidence: ModelConfidence
    ) -> Callable[[list[TokenSignals]], bool] | None:
        s = self.parts.settings.abort
        if not s.enabled:
            return None
        limit = self._abort_limit()
        running = confidence.running
        return lambda signals: len(signals) >= s.min_tokens and running(signals) < limit

    # -- the broker -----------------------------------------------------------------------

    def _escalate(self, decided: Route, local: LocalResult | None) -> Steps:
        link = self.parts.link.link()
        assert link is not None, "route() escalates only over a usable link"
        record = self.record
        if decided.path == "skipped-local":
            record.skipped_local = True
        yield Decided(decided.path or "cloud", decided.reason)
        started = time.perf_counter()
        streamed: list[str] = []
        try:
            cloud = yield from self._broker_text(link, local, streamed)
        except EscalationFailed as failure:
            record.broker_ms = (time.perf_counter() - started) * 1000
            record.broker = failed_info(link, failure)
            answer: Answer = yield from self._fall_back(decided, failure, local, bool(streamed))
            return answer
        record.broker_ms = (time.perf_counter() - started) * 1000
        if not self.live:
            yield from _text(cloud.text)
        self.parts.budget.record(cloud.prompt_tokens + cloud.completion_tokens)
        self.parts.sampler.refresh()
        record.broker = answered_info(link, cloud)
        return record.cloud_answer(decided.escalated(f"escalated to {cloud.model}"), cloud)

    def _broker_text(
        self, link: BrokerLink, local: LocalResult | None, streamed: list[str]
    ) -> Steps:
        """The broker's answer; its text streams as events when the consumer is live."""
        request = self.request
        draft = None
        if local is not None:
            run = local.run
            draft = Draft(run.text, local.confidence, request.model, run.stats.completion_tokens)
        self._check_cancel()
        steps = link.stream(
            request.messages,
            request.params,
            draft=draft,
            deadline_s=request.deadline_s,
            cancel=self.cancel,
        )
        while True:
            try:
                text = next(steps)
            except StopIteration as done:
                cloud: CloudAnswer = done.value
                return cloud
            streamed.append(text)
            if self.live:
                yield TextChunk(text)

    def _fall_back(
        self, decided: Route, failure: EscalationFailed, local: LocalResult | None, streamed: bool
    ) -> Steps:
        """The broker failed: the local answer, finished now if it was not."""
        if streamed and self.live:
            yield Reset(f"the broker failed mid-answer ({failure.reason})")
        if local is None or local.abort is not None:
            # No finished local answer: generate one now, to the end.
            self.record.first_abort = None if local is None else local.abort
            local = yield from self._generate(Route("generate", decided.reason))
        degraded = decided.failed(f"escalation failed ({failure.reason})")
        yield Decided("local-degraded", degraded.reason)
        yield from _text(local.run.text)
        return self.record.local_answer(degraded)

    # -- the semantic answer cache --------------------------------------------------------

    def _caching(self) -> bool:
        return self.parts.settings.cache.enabled

    def _lookup(self) -> tuple[SemanticCache | None, CacheHit | None]:
        """The cache and its best hit for this prompt. The cache must never stop an answer:
        whatever the store, the encoder or ONNX Runtime raised, the request goes on."""
        started = time.perf_counter()
        cache, hit = None, None
        try:
            cache = self.parts.cache.get()
            if cache is not None:
                self._vector = self.parts.embedder.embed_one(self.request.question)
                hit = cache.lookup(self.request.question, self._scope(), vector=self._vector)
        except Exception as exc:
            log.warning("semantic cache unavailable: %s: %s", type(exc).__name__, exc)
            cache, hit = None, None
        self.record.cache_ms = (time.perf_counter() - started) * 1000
        # mode cloud wants a broker's answer, cached or not
        if hit is not None and self.request.mode == "cloud" and hit.answer.get("source") == "local":
            hit = None
        return cache, hit

    def _from_cache(self, hit: CacheHit) -> Iterator[Event]:
        stored = hit.answer
        text, model = str(stored.get("text", "")), str(stored.get("model", ""))
        similarity = self.parts.settings.cache.similarity
        self.record.cache = CacheInfo(
            similarity=hit.similarity,
            age_s=hit.age_s,
            prompt=hit.prompt,
            source=str(stored.get("source", "")),
            threshold=similarity,
        )
        reason = (
            f"a cached answer to a similar prompt (similarity {hit.similarity:.3f} ≥ "
            f"{similarity:.2f}, {hit.age_s:.0f} s old)"
        )
        yield Decided("cache", reason)
        yield from _text(text)
        yield Done(self.record.cached_answer(reason, text, model))

    def _scope(self) -> str:
        """Answers are shared between requests with the same model, the same conversation
        before the last question (the system prompt included) and the same options that
        shape an answer's text (length, stop sequences, sampling)."""
        request = self.request
        before = [(m.role, m.content) for m in request.messages[:-1]]
        p = request.params
        shape = [p.max_tokens, list(p.stop), p.temperature, p.top_p, p.seed]
        return hashlib.sha256(json.dumps([request.model, before, shape]).encode()).hexdigest()

    def _store(self, cache: SemanticCache, answer: Answer) -> None:
        if self._vector is None or not self._worth_caching(answer):
            return
        stored = {"text": answer.text, "model": answer.model, "source": answer.source}
        try:
            cache.put(self.request.question, self._scope(), stored, vector=self._vector)
        except Exception as exc:  # the answer is already made
            log.warning("could not store the answer in the semantic cache: %s", exc)

    def _worth_caching(self, answer: Answer) -> bool:
        if answer.finish_reason not in ("stop", "stop_sequence"):
            return False  # cut at max_tokens, or cancelled: not an answer to reuse
        if answer.source in ("cloud", "skipped-local"):
            return True
        return answer.source == "local" and self.parts.settings.cache.store == "all"

    def _check_cancel(self) -> None:
        if self.cancel is not None:
            self.cancel.check()


def _text(text: str) -> Iterator[Event]:
    if text:
        yield TextChunk(text)


def _forward(steps: Generator[str, None, LocalRun], live: bool) -> Steps:
    """Run a local generation to its end, yielding its text as events when ``live``."""
    while True:
        try:
            text = next(steps)
        except StopIteration as done:
            run: LocalRun = done.value
            return run
        if live:
            yield TextChunk(text)
