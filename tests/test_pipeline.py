"""The edge request pipeline's whole decision matrix, in-process, in milliseconds: a scripted
model through the real store, runtime registry and pool, and a scripted broker link.

local · escalate · skipped-local · early abort · degraded (failed call, broken stream,
unusable broker, open circuit) · budget · private · cache hit · no broker configured ·
modes · events and their order · cancel. The same paths run end to end with real models
and a real broker process in test_escalation.py and test_daemon.py.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fastlane import DOUBTFUL, EASY, HARD, SCRIPTED, STRAY, ScriptedLink, fast_agent

from edge_agent import Decided, Done, EdgeAgent, RequestOptions, Reset, TextChunk
from edge_agent.link.escalation import EscalationFailed
from ridgeline_core import errors
from ridgeline_core.cancel import CancelToken

REFUSED = EscalationFailed("UnavailableError: refused", started=False, attempts=1, outage=True)


def kinds(events: list[object]) -> list[str]:
    return [type(e).__name__ for e in events]


# -- the paths ----------------------------------------------------------------------------


def test_a_confident_local_answer_stays_local(tmp_path: Path) -> None:
    link = ScriptedLink()
    with fast_agent(tmp_path, link) as agent:
        answer = agent.ask(EASY, threshold=0.5)
    assert (answer.source, answer.model) == ("local", SCRIPTED)
    assert answer.text == "The capital of France is Paris."
    assert answer.confidence == pytest.approx(0.95)
    assert answer.decision.reason == "confidence 0.95 ≥ τ 0.50"
    assert answer.decision.broker is None and not link.calls
    assert answer.timings is not None and answer.timings.completion_tokens == 6


def test_an_unsure_answer_escalates_with_its_draft(tmp_path: Path) -> None:
    link = ScriptedLink()
    with fast_agent(tmp_path, link) as agent:
        answer = agent.ask(DOUBTFUL, threshold=0.5, deadline_s=7)
    assert (answer.source, answer.model, answer.text) == (
        "cloud",
        "big-model",
        "Paris, says the broker.",
    )
    assert answer.confidence == pytest.approx(0.3)  # the local draft's
    assert answer.decision.reason == "confidence 0.30 < τ 0.50: escalated to big-model"
    (call,) = link.calls
    assert call.draft is not None and call.draft.text == "No, a tomato is a vegetable."
    assert call.deadline_s == 7
    broker = answer.decision.broker
    assert broker is not None and broker.model == "big-model" and broker.completion_tokens == 5


def test_a_hopeless_prompt_skips_the_local_model(tmp_path: Path) -> None:
    link = ScriptedLink()
    with fast_agent(tmp_path, link) as agent:
        answer = agent.ask(HARD, threshold=0.55)
    assert answer.source == "skipped-local"
    assert answer.decision.reason.startswith("pre-route predicted")
    preroute = answer.decision.preroute
    assert preroute is not None and preroute.skipped_local and "arithmetic" in preroute.hints
    assert answer.decision.timings.local_ms is None and answer.timings is None
    assert link.calls[0].draft is None


def test_an_answer_going_badly_is_aborted_early_and_escalated(tmp_path: Path) -> None:
    link = ScriptedLink()
    with fast_agent(tmp_path, link, abort={"min_tokens": 3}) as agent:
        answer = agent.ask(STRAY, threshold=0.5)
    assert answer.source == "cloud"
    aborted = answer.decision.aborted
    assert aborted is not None and aborted.at_token == 3
    assert answer.decision.reason.startswith("early abort at token 3")
    assert link.calls[0].draft is not None  # the partial draft goes along


def test_a_failed_escalation_answers_locally_degraded(tmp_path: Path) -> None:
    link = ScriptedLink([REFUSED])
    with fast_agent(tmp_path, link) as agent:
        answer = agent.ask(DOUBTFUL, threshold=0.5)
    assert answer.source == "local-degraded"
    assert answer.text == "No, a tomato is a vegetable."
    assert answer.decision.reason == (
        "confidence 0.30 < τ 0.50; escalation failed (UnavailableError: refused)"
    )
    assert answer.decision.broker is not None and answer.decision.broker.error


def test_after_an_abort_a_failed_escalation_finishes_the_local_answer(tmp_path: Path) -> None:
    with fast_agent(tmp_path, ScriptedLink([REFUSED]), abort={"min_tokens": 3}) as agent:
        answer = agent.ask(STRAY, threshold=0.5)
    assert answer.source == "local-degraded"
    assert answer.text.startswith("a thread of life a thread of life")  # run to its end
    assert answer.decision.aborted is not None  # the first, aborted run is kept


def test_an_open_circuit_answers_locally_degraded_without_a_call(tmp_path: Path) -> None:
    link = ScriptedLink()
    link.open_circuit()
    with fast_agent(tmp_path, link) as agent:
        answer = agent.ask(DOUBTFUL, threshold=0.5)
    assert answer.source == "local-degraded"
    assert "broker circuit open" in answer.decision.reason
    assert answer.decision.gate is not None and not link.calls


def test_a_spent_budget_keeps_the_answer_local(tmp_path: Path) -> None:
    link = ScriptedLink()
    with fast_agent(tmp_path, link, rows=[{"budget_left": 0.0}]) as agent:
        answer = agent.ask(DOUBTFUL, threshold=0.5)
    assert answer.source == "local"
    assert answer.decision.reason.endswith("but the escalation budget is spent")
    assert not link.calls


def test_without_a_broker_an_unsure_answer_is_local(tmp_path: Path) -> None:
    with fast_agent(tmp_path) as agent:
        answer = agent.ask(DOUBTFUL, threshold=0.5)
        assert agent.broker_missing == "no broker is configured (broker.address)"
    assert answer.source == "local"
    assert answer.decision.reason == (
        "confidence 0.30 < τ 0.50, but no broker is configured (broker.address)"
    )


def test_an_unusable_broker_is_degraded(tmp_path: Path) -> None:
    broker = {"address": "127.0.0.1:9", "ca_file": str(tmp_path / "missing-ca.pem")}
    with fast_agent(tmp_path, broker=broker) as agent:
        answer = agent.ask(DOUBTFUL, threshold=0.5)
        assert agent.broker_failed
    assert answer.source == "local-degraded"
    assert "broker unusable" in answer.decision.reason


def test_modes(tmp_path: Path) -> None:
    link = ScriptedLink()
    with fast_agent(tmp_path, link) as agent:
        local = agent.ask(DOUBTFUL, mode="local", threshold=0.5)
        cloud = agent.ask(EASY, mode="cloud", threshold=0.5)
    assert (local.source, local.decision.reason) == (
        "local",
        "confidence 0.30 < τ 0.50, but mode local never escalates",
    )
    assert (cloud.source, cloud.decision.reason) == (
        "cloud",
        "mode cloud always escalates: escalated to big-model",
    )
    assert cloud.decision.timings.local_ms is None  # the local model never ran
    assert len(link.calls) == 1


# -- the answer cache and private prompts ------------------------------------------------


def test_an_escalated_answer_is_cached_and_a_similar_prompt_reuses_it(tmp_path: Path) -> None:
    link = ScriptedLink()
    with fast_agent(tmp_path, link, cache={"enabled": True}) as agent:
        first = agent.ask(DOUBTFUL, threshold=0.5)
        again = agent.ask(DOUBTFUL + " ", threshold=0.5)
        private = agent.ask(DOUBTFUL, threshold=0.5, private=True)
    assert first.source == "cloud"
    assert (again.source, again.text, again.model) == ("cache", first.text, "big-model")
    assert again.decision.cache is not None and again.decision.cache.source == "cloud"
    assert again.decision.reason.startswith("a cached answer to a similar prompt")
    assert private.source == "cloud"  # a private prompt is never looked up
    assert len(link.calls) == 2


def test_a_local_answer_is_not_cached_by_default(tmp_path: Path) -> None:
    with fast_agent(tmp_path, ScriptedLink(), cache={"enabled": True}) as agent:
        assert agent.ask(EASY, threshold=0.5).source == "local"
        assert agent.ask(EASY, threshold=0.5).source == "local"


# -- events --------------------------------------------------------------------------------


def test_a_local_answer_is_decided_then_streamed(tmp_path: Path) -> None:
    with fast_agent(tmp_path, ScriptedLink()) as agent:
        events = list(agent.stream(EASY, threshold=0.5))
    assert kinds(events) == ["Decided", "TextChunk", "Done"]
    decided = events[0]
    assert isinstance(decided, Decided) and decided.path == "local"


def test_a_final_local_answer_streams_as_it_is_generated(tmp_path: Path) -> None:
    with fast_agent(tmp_path, ScriptedLink()) as agent:
        events = list(agent.stream(EASY, mode="local"))
    texts = [e.text for e in events if isinstance(e, TextChunk)]
    assert len(texts) == 6 and "".join(texts) == "The capital of France is Paris."
    assert kinds(events)[-2:] == ["Decided", "Done"]  # decided once the confidence is known


def test_broker_text_streams_live_and_is_reset_when_the_broker_fails(tmp_path: Path) -> None:
    link = ScriptedLink([("mid", "Partial broker words")])
    with fast_agent(tmp_path, link) as agent:
        events = list(agent.stream(DOUBTFUL, threshold=0.5))
    assert kinds(events) == [
        "Decided",  # escalating
        "TextChunk",
        "TextChunk",
        "TextChunk",
        "Reset",
        "Decided",  # local-degraded
        "TextChunk",
        "Done",
    ]
    first, reset, last = events[0], events[4], events[5]
    assert isinstance(first, Decided) and first.path == "cloud"
    assert isinstance(reset, Reset) and "the broker failed mid-answer" in reset.reason
    assert isinstance(last, Decided) and last.path == "local-degraded"
    done = events[-1]
    assert isinstance(done, Done) and done.answer.source == "local-degraded"


def test_ask_does_not_stream_broker_text_it_might_have_to_take_back(tmp_path: Path) -> None:
    link = ScriptedLink([("mid", "Partial broker words")])
    with fast_agent(tmp_path, link) as agent:
        pipeline = agent.pipeline(DOUBTFUL, agent_options(threshold=0.5), live=False)
        events = list(pipeline.events())
    assert "Reset" not in kinds(events)
    assert [e.text for e in events if isinstance(e, TextChunk)] == ["No, a tomato is a vegetable."]


def test_async_stream_gives_the_same_events(tmp_path: Path) -> None:
    import asyncio

    async def collect(agent: EdgeAgent) -> list[object]:
        return [event async for event in agent.stream_async(DOUBTFUL, threshold=0.5)]

    with fast_agent(tmp_path, ScriptedLink()) as agent:
        events = asyncio.run(collect(agent))
    assert kinds(events) == ["Decided", "TextChunk", "TextChunk", "TextChunk", "TextChunk", "Done"]


# -- cancel and bad requests ----------------------------------------------------------------


def test_cancel_stops_the_local_generation(tmp_path: Path) -> None:
    slow = {
        "answers": [{"when": "", "text": "word " * 200, "prob": 0.9}],
        "token_delay_s": 0.01,
    }
    with fast_agent(tmp_path, ScriptedLink(), script=slow) as agent:
        cancel = CancelToken()
        timer = threading.Timer(0.1, cancel.cancel, ("the user pressed stop",))
        timer.start()
        with pytest.raises(errors.RequestCancelledError, match="pressed stop"):
            agent.ask("Tell me a long story.", mode="local", max_tokens=200, cancel=cancel)
        timer.cancel()


def test_closing_a_stream_early_frees_the_model(tmp_path: Path) -> None:
    with fast_agent(tmp_path, ScriptedLink()) as agent:
        stream = agent.stream(EASY, mode="local")
        assert isinstance(next(stream), TextChunk)
        stream.close()  # leaves the pool's lease
        assert agent.ask(EASY, mode="local").text == "The capital of France is Paris."


def test_bad_requests_are_refused_before_any_work(tmp_path: Path) -> None:
    link = ScriptedLink()
    with fast_agent(tmp_path, link) as agent:
        with pytest.raises(errors.UnknownModelError):
            agent.ask(EASY, model="no-such-model")
        with pytest.raises(errors.InvalidRequestError, match="max_tokens"):
            agent.ask(EASY, max_tokens=0)
        with pytest.raises(errors.InvalidRequestError, match="unknown field 'colour'"):
            agent.ask(EASY, colour="blue")  # type: ignore[call-arg]
        with pytest.raises(errors.EmptyPromptError):
            agent.ask("   ")
    assert not link.calls


def agent_options(**values: object) -> RequestOptions:
    return RequestOptions.parse(values)
