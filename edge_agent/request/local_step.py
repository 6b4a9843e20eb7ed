"""The pipeline's local stage: lease the model, generate (with early abort when the route
allows it), and judge the answer's confidence (with the probes only when they can still
change the route)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Generator

from ridgeline_core.runtime import Runtime, ThreadedRuntime, TokenSignals
from ridgeline_core.runtime.threads import threads_for_load

from ..confidence.calibrated import ModelConfidence
from ..confidence.variants import choose_variant
from ..decision import AbortInfo
from ..routing.route import Route
from .context import RequestContext
from .events import Event, TextChunk
from .local import LocalResult, LocalRun, generate_local

__all__ = ["run_local_stage"]


def run_local_stage(ctx: RequestContext, decided: Route) -> Generator[Event, None, LocalResult]:
    """Generate the local answer as ``decided`` says (``abort``, ``live``, ``probes``);
    its text streams as events when ``live``."""
    parts, request, record = ctx.parts, ctx.request, ctx.record
    ctx.check_cancel()
    started = time.perf_counter()
    with parts.runtimes.lease(request.model, ctx.progress, ctx.cancel) as runtime:
        load_s = time.perf_counter() - started
        record.threads = _use_threads(ctx, runtime)
        knowledge = ctx.record.knowledge
        confidence = parts.confidence.for_model(
            request.model, runtime, knowledge=knowledge is not None and knowledge.used
        )
        should_abort = _abort_check(ctx, confidence) if decided.abort else None
        steps = generate_local(runtime, request.messages, request.params, should_abort, ctx.cancel)
        run: LocalRun = yield from _forward(steps, decided.live)
        parts.local_speed.record(run.stats.tokens_per_s, run.stats.time_to_first_token_s)
        local = _judge(ctx, run, runtime, confidence, decided, load_s)
    record.local = local
    record.local_ms += (time.perf_counter() - started) * 1000
    parts.sampler.refresh()
    return local


def _use_threads(ctx: RequestContext, runtime: Runtime) -> int | None:
    """The threads this request generates with: those the model was loaded with, less
    the cores other processes keep busy now (``runtime.adaptive_threads``)."""
    if not isinstance(runtime, ThreadedRuntime):
        return None
    if not ctx.parts.settings.runtime.adaptive_threads:
        return runtime.use_threads(None)
    others = ctx.record.snapshot.cpu_load
    return runtime.use_threads(threads_for_load(runtime.loaded_threads, others))


def _forward(steps: Generator[str, None, LocalRun], live: bool) -> Generator[Event, None, LocalRun]:
    while True:
        try:
            text = next(steps)
        except StopIteration as done:
            run: LocalRun = done.value
            return run
        if live:
            yield TextChunk(text)


def _judge(
    ctx: RequestContext,
    run: LocalRun,
    runtime: Runtime,
    confidence: ModelConfidence,
    decided: Route,
    load_s: float,
) -> LocalResult:
    if run.aborted_at is not None:
        running = confidence.running(run.signals)
        abort = AbortInfo(run.aborted_at, running, _abort_limit(ctx))
        return LocalResult(run, running, load_s, abort, confidence.running_info(run.signals))
    if decided.probes or ctx.parts.settings.confidence.probes == "always":
        ctx.check_cancel()
        knowledge = ctx.record.knowledge
        retrieval = None if knowledge is None else knowledge.evidence()
        setting = ctx.parts.settings.confidence.variant
        variant, why = choose_variant(setting, ctx.record.snapshot)
        evidence = run.evidence(ctx.request.question, retrieval)
        scored = confidence.score(runtime, evidence, variant, why)
        return LocalResult(run, scored.confidence, load_s, None, scored.info)
    info = confidence.running_info(run.signals)
    why = f"probes skipped: {decided.gate or 'the route does not depend on it'}"
    info = dataclasses.replace(info, note=f"{info.note}; {why}" if info.note else why)
    return LocalResult(run, confidence.running(run.signals), load_s, None, info)


def _abort_limit(ctx: RequestContext) -> float:
    return ctx.record.tau - ctx.parts.settings.abort.margin


def _abort_check(
    ctx: RequestContext, confidence: ModelConfidence
) -> Callable[[list[TokenSignals]], bool] | None:
    s = ctx.parts.settings.abort
    if not s.enabled:
        return None
    limit = _abort_limit(ctx)
    running = confidence.running
    return lambda signals: len(signals) >= s.min_tokens and running(signals) < limit
