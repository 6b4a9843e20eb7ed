"""Threads under contention: a request leaves the cores other processes keep busy to them
(runtime.adaptive_threads), and a greedy answer does not change with the thread count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SMOLLM2

from edge_agent import EdgeAgent, EdgeSettings
from ridgeline_core.runtime import ChatMessage, Runtime, SamplingParams, ThreadedRuntime
from ridgeline_core.runtime.threads import threads_for_load
from ridgeline_core.store import ModelStore


@pytest.mark.parametrize(
    ("configured", "others", "cores", "expected"),
    [
        (2, None, 2, 2),  # not measured: as loaded
        (2, 0.0, 2, 2),
        (2, 0.2, 2, 2),  # 1.6 cores free
        (2, 0.5, 2, 1),  # one of two cores busy
        (2, 1.0, 2, 1),  # never fewer than one
        (4, 0.5, 8, 4),  # never more than loaded
        (8, 0.25, 8, 6),
        (2, 7.0, 2, 1),  # out of range: clamped
    ],
)
def test_threads_follow_the_cpu_other_processes_use(
    configured: int, others: float | None, cores: int, expected: int
) -> None:
    assert threads_for_load(configured, others, cores) == expected


@pytest.mark.model
def test_a_greedy_answer_is_the_same_with_fewer_threads(smollm2: Runtime) -> None:
    import llama_cpp

    assert isinstance(smollm2, ThreadedRuntime) and smollm2.loaded_threads == 2
    messages = [ChatMessage("user", "Name three rivers in Europe.")]
    params = SamplingParams(max_tokens=24, temperature=0.0)
    both = smollm2.generate(messages, params).text
    ctx = smollm2._llm.ctx  # type: ignore[attr-defined]
    try:
        assert smollm2.use_threads(1) == 1
        assert llama_cpp.llama_n_threads(ctx) == 1 and llama_cpp.llama_n_threads_batch(ctx) == 1
        assert smollm2.generate(messages, params).text == both
    finally:
        assert smollm2.use_threads(None) == 2
    assert llama_cpp.llama_n_threads(ctx) == 2


def settings(model_store: ModelStore, root: Path, **runtime: object) -> EdgeSettings:
    trace = root / "busy.jsonl"
    trace.write_text(json.dumps({"t": 0, "cpu_load": 0.99}) + "\n")
    return EdgeSettings.model_validate(
        {
            "models": {"store_dir": str(model_store.root), "default": SMOLLM2},
            "runtime": {"threads": 2, **runtime},
            "generation": {"max_tokens": 8, "temperature": 0.0},
            "budget": {"state_file": str(root / "budget.json")},
            "telemetry": {"sources": [], "trace": str(trace)},
        }
    )


@pytest.mark.model
@pytest.mark.parametrize(("adaptive", "threads"), [(True, 1), (False, 2)])
def test_the_agent_leaves_busy_cores_to_other_processes(
    model_store: ModelStore, tmp_path: Path, adaptive: bool, threads: int
) -> None:
    edge = settings(model_store, tmp_path, adaptive_threads=adaptive)
    with EdgeAgent(edge, background=False) as agent:
        answer = agent.ask("What is the capital of France?", mode="local")
    assert answer.decision.telemetry["cpu_load"] == pytest.approx(0.99)
    assert answer.decision.local_threads == threads
    assert answer.decision.to_dict()["local_threads"] == threads
