"""Running the models of one request: :class:`Call`.

Every model a strategy runs goes through here, so each run is admitted to the model's
slots, charged to the device's token budget (:func:`~cloud_broker.generation.generate`),
priced, recorded as a :class:`~.base.Member` in the order it started, and started only when
``max_cost`` allows (:class:`~.costs.Meter`; CostLimitError otherwise). A member that is
cancelled (the client left, the deadline passed) stops its backend before the cancel goes
on; its record keeps an estimate of what it spent.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, replace

from ridgeline_core import errors
from ridgeline_core.runtime import ChatMessage
from ridgeline_core.wire import LocalDraft

from ..backends import Backend, BackendRequest, Outcome, Probe
from ..generation import GenerationTimes, generate
from ..ratelimit import Rate
from .base import Member, Text
from .costs import Meter, estimate_prompt_tokens

__all__ = ["Answer", "Call", "Ledger"]


@dataclass(frozen=True)
class Answer:
    """A member's whole answer."""

    text: str
    outcome: Outcome
    member: Member


class Ledger:
    """A request's members so far, what they cost, and whether the next may start."""

    def __init__(self, request: BackendRequest, meter: Meter) -> None:
        self.request, self.meter = request, meter
        self.members: list[Member] = []
        self.notes: list[str] = []
        self.queue_s: float | None = None

    def estimate(self, model: str, request: BackendRequest | None = None) -> float:
        """What running ``model`` on ``request`` may cost, at most."""
        request = request or self.request
        prompt = estimate_prompt_tokens(request.messages)
        return self.meter.prices.cost(model, prompt, request.params.max_tokens)

    def sampled(self, temperature: float, seed: int) -> BackendRequest:
        """The request, sampled at ``temperature`` with ``seed``."""
        params = replace(self.request.params, temperature=temperature, seed=seed)
        return replace(self.request, params=params)

    def record(self, member: Member) -> Member:
        """Add a record of something that ran elsewhere (the device's draft)."""
        self.members.append(member)
        return member

    def start(self, model: str, role: str, estimate: float) -> tuple[Member, int]:
        if not self.meter.affordable(estimate):
            meter = self.meter
            raise errors.CostLimitError(
                f"max_cost {meter.max_cost:g} does not cover {role} {model!r}: it may cost "
                f"{estimate:.6g} on top of {meter.spent:.6g} spent",
                param="max_cost",
            )
        member = self.record(Member(model, role))
        return member, self.meter.reserve(estimate)

    def settle(
        self, member: Member, key: int, times: GenerationTimes, tokens: tuple[int, int]
    ) -> None:
        member.prompt_tokens, member.completion_tokens = tokens
        member.cost = self.meter.prices.cost(member.model, *tokens)
        member.latency_ms = times.total_s * 1000
        self.meter.settle(key, member.cost)
        if self.queue_s is None:
            self.queue_s = times.queue_s


class Call(Ledger):
    """One request's members, run on ``backends`` for ``device`` (see the module)."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        request: BackendRequest,
        *,
        device: str,
        rate: Rate,
        meter: Meter,
        draft: LocalDraft | None = None,
        task: str = "",
        willingness_to_pay: float | None = None,
    ) -> None:
        super().__init__(request, meter)
        self.backends, self.device, self.rate = backends, device, rate
        self.draft, self.task, self.willingness_to_pay = draft, task, willingness_to_pay

    async def answer(
        self, model: str, request: BackendRequest | None = None, role: str = "answer"
    ) -> Answer:
        """``model``'s whole answer to ``request`` (the call's own by default)."""
        async with contextlib.aclosing(self.stream(model, request, role)) as pieces:
            async for item in pieces:
                if isinstance(item, Answer):
                    return item
        raise errors.UnavailableError(f"model {model!r} ended without an answer")

    async def stream(
        self, model: str, request: BackendRequest | None = None, role: str = "answer"
    ) -> AsyncGenerator[Text | Answer, None]:
        """``model``'s answer as it is written, then the whole :class:`Answer`."""
        request = request or self.request
        backend = self.backends[model]
        member, key = self.start(model, role, self.estimate(model, request))
        times = GenerationTimes(received=time.perf_counter())
        pieces: list[str] = []
        outcome: Outcome | None = None
        running = generate(backend, request, self.device, self.rate, times)
        try:
            async with contextlib.aclosing(running) as items:
                async for item in items:
                    if isinstance(item, str):
                        pieces.append(item)
                        yield Text(item, model)
                    else:
                        outcome = item
        except errors.RidgelineError as exc:
            member.note = f"{exc.kind}: {exc}"
            raise
        finally:
            ran = times.admitted is not None  # else it never got a slot
            self.settle(member, key, times, _tokens(request, outcome, pieces) if ran else (0, 0))
        assert outcome is not None  # generate() raises when there is none
        yield Answer("".join(pieces), outcome, member)

    async def probe(
        self, model: str, messages: tuple[ChatMessage, ...], candidates: Sequence[str]
    ) -> tuple[Probe, Member]:
        """``model``'s first-token probabilities for ``candidates`` (one forward pass)."""
        return await _probe(self, model, messages, candidates)


async def _probe(
    call: Call, model: str, messages: tuple[ChatMessage, ...], candidates: Sequence[str]
) -> tuple[Probe, Member]:
    backend = call.backends[model]
    estimate = call.meter.prices.cost(model, estimate_prompt_tokens(messages), 0)
    member, key = call.start(model, "verifier", estimate)
    times = GenerationTimes(received=time.perf_counter())
    try:
        await backend.admission.acquire()
    except BaseException:  # no slot (queue full, cancelled): it never ran
        call.settle(member, key, times, (0, 0))
        raise
    times.admitted = time.perf_counter()
    tokens = (estimate_prompt_tokens(messages), 0)  # failed or cancelled: the estimate
    try:
        probe = await backend.next_token_probs(messages, candidates)
        tokens = (probe.prompt_tokens, 0)
    finally:
        times.done = time.perf_counter()
        backend.admission.release(times.done - times.admitted)
        call.rate.charge(call.device, tokens[0])
        call.settle(member, key, times, tokens)
    return probe, member


def _tokens(request: BackendRequest, outcome: Outcome | None, pieces: list[str]) -> tuple[int, int]:
    """Tokens a member used: its outcome's, else an estimate from the text (cancelled)."""
    if outcome is not None:
        return outcome.prompt_tokens, outcome.completion_tokens
    streamed = sum(len(piece) for piece in pieces)
    return estimate_prompt_tokens(request.messages), (streamed + 3) // 4
