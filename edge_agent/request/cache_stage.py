"""The pipeline's semantic answer cache stage: look the question up before any model runs,
answer from a close enough hit, and keep an escalated answer for the next similar question.

The cache must never stop an answer: whatever the store, the encoder or ONNX Runtime
raises, the request goes on without it. A private question is never embedded, looked up
or stored (the pipeline does not enter this stage for it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..decision import CacheInfo
from .answer import Answer
from .context import RequestContext
from .events import Decided, Done, Event, TextChunk
from .record import cached_answer

if TYPE_CHECKING:
    from ..knowledge.cache import CacheHit, SemanticCache

__all__ = ["answer_from_cache", "look_up", "remember"]

log = logging.getLogger(__name__)


def look_up(ctx: RequestContext) -> tuple[SemanticCache | None, CacheHit | None]:
    """The cache (None when it cannot be used now) and its best hit for the question."""
    started = time.perf_counter()
    cache, hit = None, None
    try:
        cache = ctx.parts.cache.get()
        if cache is not None:
            ctx.vector = ctx.parts.embedder.embed_one(ctx.request.question)
            hit = cache.lookup(ctx.request.question, _scope(ctx), vector=ctx.vector)
    except Exception as exc:
        log.warning("semantic cache unavailable: %s: %s", type(exc).__name__, exc)
        cache, hit = None, None
    ctx.record.cache_ms = (time.perf_counter() - started) * 1000
    # mode cloud wants a broker's answer, cached or not
    if hit is not None and ctx.request.mode == "cloud" and hit.answer.get("source") == "local":
        hit = None
    return cache, hit


def answer_from_cache(ctx: RequestContext, hit: CacheHit) -> Iterator[Event]:
    stored = hit.answer
    text, model = str(stored.get("text", "")), str(stored.get("model", ""))
    similarity = ctx.parts.settings.cache.similarity
    ctx.record.cache = CacheInfo(
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
    if text:
        yield TextChunk(text)
    yield Done(cached_answer(ctx.record, reason, text, model))


def remember(ctx: RequestContext, cache: SemanticCache, answer: Answer) -> None:
    """Keep ``answer`` for similar questions, when it is worth keeping."""
    if ctx.vector is None or not _worth_caching(ctx, answer):
        return
    stored = {"text": answer.text, "model": answer.model, "source": answer.source}
    try:
        cache.put(ctx.request.question, _scope(ctx), stored, vector=ctx.vector)
    except Exception as exc:  # the answer is already made
        log.warning("could not store the answer in the semantic cache: %s", exc)


def _scope(ctx: RequestContext) -> str:
    """Answers are shared between requests with the same model, the same conversation
    before the last question (the system prompt included) and the same options that
    shape an answer's text (length, stop sequences, sampling)."""
    request = ctx.request
    before = [(m.role, m.content) for m in request.messages[:-1]]
    p = request.params
    shape = [p.max_tokens, list(p.stop), p.temperature, p.top_p, p.seed]
    return hashlib.sha256(json.dumps([request.model, before, shape]).encode()).hexdigest()


def _worth_caching(ctx: RequestContext, answer: Answer) -> bool:
    if answer.finish_reason not in ("stop", "stop_sequence"):
        return False  # cut at max_tokens, or cancelled: not an answer to reuse
    if answer.source in ("cloud", "skipped-local"):
        return True
    return answer.source == "local" and ctx.parts.settings.cache.store == "all"
