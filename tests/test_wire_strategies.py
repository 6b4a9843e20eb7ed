"""The shared wire for strategies: a request naming a strategy and a cost limit, a result
with its members, cost and verdict; and judged outcomes read back for calibration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.evaluation.dataset import load_judged
from ridgeline.v1 import broker_pb2
from ridgeline_core import wire
from ridgeline_core.errors import InvalidRequestError
from ridgeline_core.runtime import ChatMessage, SamplingParams


def test_a_request_names_a_strategy_and_its_cost_limit() -> None:
    choice = wire.StrategyChoice("fast-then-strong", task="math", willingness_to_pay=0.5)
    request = wire.generate_request(
        [ChatMessage("user", "hi")], SamplingParams(), model="m", strategy=choice, max_cost=0.01
    )
    assert request.WhichOneof("target") == "strategy"  # the strategy, not the model
    assert request.strategy.name == "fast-then-strong" and request.strategy.task == "math"
    assert request.strategy.willingness_to_pay == pytest.approx(0.5)
    assert request.max_cost == pytest.approx(0.01)
    plain = wire.generate_request([ChatMessage("user", "hi")], SamplingParams(), model="m")
    assert plain.model == "m" and not plain.HasField("max_cost")


def test_a_result_carries_members_cost_and_the_verdict() -> None:
    result = broker_pb2.GenerateResult(
        answer_model="edge",
        strategy=broker_pb2.Strategy.KIND_CASCADE,
        strategy_name="fast-then-strong",
        cost=0.25,
        notes=["a note"],
        members=[
            broker_pb2.MemberRecord(model="edge", role="draft", accepted=True, score=0.8),
            broker_pb2.MemberRecord(
                model="judge", role="verifier", cost=0.25, usage=broker_pb2.Usage(prompt_tokens=9)
            ),
        ],
    )
    result.draft_verdict.CopyFrom(
        broker_pb2.DraftVerdict(accepted=True, score=0.8, verifier="verifier:judge")
    )
    parsed = wire.event_from_pb(broker_pb2.GenerateResponse(result=result))
    assert isinstance(parsed, wire.BrokerResult)
    assert parsed.strategy == "cascade" and parsed.strategy_name == "fast-then-strong"
    assert parsed.cost == 0.25 and parsed.notes == ("a note",)
    draft, judge = parsed.members
    assert draft.role == "draft" and draft.accepted and draft.score == pytest.approx(0.8)
    assert judge.score is None and judge.prompt_tokens == 9  # unset score stays None
    assert parsed.draft_verdict == wire.DraftVerdict(True, pytest.approx(0.8), "verifier:judge")
    single = wire.event_from_pb(broker_pb2.GenerateResponse(result=broker_pb2.GenerateResult()))
    assert isinstance(single, wire.BrokerResult) and single.draft_verdict is None


def test_judged_outcomes_become_questions_with_their_verdict(tmp_path: Path) -> None:
    path = tmp_path / "outcome-memory.jsonl"
    rows = [
        {"prompt": "Who wrote Hamlet?", "model": "m", "right": False, "source": "broker"},
        {"prompt": "Who wrote Hamlet?", "model": "m", "right": True, "source": "feedback"},
        {"prompt": "What is 2+2?", "model": "other", "right": True, "source": "broker"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = load_judged(path, "m")
    assert [(i.prompt, i.judged) for i in items] == [("Who wrote Hamlet?", True)]  # latest wins
    path.write_text('{"prompt": "x", "model": "m", "right": "yes"}\n')
    with pytest.raises(InvalidRequestError, match=r":1: not a judged outcome"):
        load_judged(path, "m")
