"""The pipeline's broker stage: escalate with the local draft, stream the broker's text
when the consumer can take it back, and fall back to the local answer, degraded, when the
broker fails."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator

from ridgeline_core.errors import UnknownStrategyError

from ..link.answers import BrokerVia
from ..link.escalation import (
    BrokerLink,
    CloudAnswer,
    Draft,
    EscalationFailed,
    answered_info,
    failed_info,
)
from ..routing.route import Route
from .answer import Answer
from .context import RequestContext
from .events import Decided, Event, Reset, TextChunk
from .knowledge_stage import to_broker
from .local import LocalResult
from .local_step import run_local_stage
from .record import cloud_answer, local_answer

__all__ = ["run_broker_stage"]


def run_broker_stage(
    ctx: RequestContext, decided: Route, local: LocalResult | None
) -> Generator[Event, None, Answer]:
    link = ctx.parts.link.link()
    assert link is not None, "route() escalates only over a usable link"
    record = ctx.record
    record.skipped_local = decided.path == "skipped-local"
    yield Decided(decided.path or "cloud", decided.reason)
    started = time.perf_counter()
    streamed: list[str] = []
    try:
        cloud = yield from _broker_text(ctx, link, local, streamed)
    except EscalationFailed as failure:
        if isinstance(failure.error, UnknownStrategyError):
            # the request's mistake, not the broker's: an error, not a quiet local answer
            raise failure.error from None
        record.broker_ms = (time.perf_counter() - started) * 1000
        record.broker = failed_info(link, failure)
        answer: Answer = yield from _fall_back(ctx, decided, failure, local, bool(streamed))
        return answer
    record.broker_ms = (time.perf_counter() - started) * 1000
    if not ctx.live and cloud.text:
        yield TextChunk(cloud.text)
    ctx.parts.budget.record(cloud.prompt_tokens + cloud.completion_tokens)
    ctx.parts.sampler.refresh()
    recorded = cloud.verdict is not None and local is not None and _remember_verdict(ctx, cloud)
    record.broker = dataclasses.replace(answered_info(link, cloud), verdict_recorded=recorded)
    return cloud_answer(record, decided.escalated(f"escalated to {cloud.model}"), cloud)


def _broker_text(
    ctx: RequestContext, link: BrokerLink, local: LocalResult | None, streamed: list[str]
) -> Generator[Event, None, CloudAnswer]:
    """The broker's answer; its text streams as events when the consumer is live."""
    request = ctx.request
    draft = None
    if local is not None:
        run = local.run
        draft = Draft(run.text, local.confidence, request.model, run.stats.completion_tokens)
    ctx.check_cancel()
    options = request.options
    messages, draft = to_broker(ctx, draft)
    steps = link.stream(
        messages,
        request.params,
        draft=draft,
        deadline_s=request.deadline_s,
        cancel=ctx.cancel,
        via=BrokerVia(options.strategy or "", options.max_cost),
    )
    while True:
        try:
            text = next(steps)
        except StopIteration as done:
            cloud: CloudAnswer = done.value
            return cloud
        streamed.append(text)
        if ctx.live:
            yield TextChunk(text)


def _remember_verdict(ctx: RequestContext, cloud: CloudAnswer) -> bool:
    """The broker judged the local draft: keep its verdict as a judged outcome of the local
    model (the outcome memory; pre-route and ``calibrate --outcomes`` learn from it).
    A private request is not remembered. One answered from knowledge is remembered by the
    collections it drew on (their expert selection), not by the outcome memory: its outcome
    depends on the passages, not on the question alone."""
    assert cloud.verdict is not None
    request = ctx.request
    if request.options.private:
        return False
    knowledge = ctx.record.knowledge
    if knowledge is not None and knowledge.used:
        return knowledge.judge(ctx.parts.library, cloud.verdict.accepted, "broker")
    if request.options.knowledge:
        return False
    ctx.parts.memory.add(request.model, request.question, cloud.verdict.accepted, "broker")
    return True


def _fall_back(
    ctx: RequestContext,
    decided: Route,
    failure: EscalationFailed,
    local: LocalResult | None,
    streamed: bool,
) -> Generator[Event, None, Answer]:
    """The broker failed: the local answer, finished now if it was not."""
    if streamed and ctx.live:
        yield Reset(f"the broker failed mid-answer ({failure.reason})")
    if local is None or local.abort is not None:
        # No finished local answer: generate one now, to the end.
        ctx.record.first_abort = None if local is None else local.abort
        local = yield from run_local_stage(ctx, Route("generate", decided.reason))
    degraded = decided.failed(f"escalation failed ({failure.reason})")
    yield Decided("local-degraded", degraded.reason)
    if local.run.text:
        yield TextChunk(local.run.text)
    return local_answer(ctx.record, degraded)
