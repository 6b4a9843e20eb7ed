"""Outcome memory and its part in the pre-route: past judged prompts move the prediction
for similar new ones. Unit tests use explicit vectors or a bag-of-words fake embedder; the
last test runs the real ONNX encoder and the real agent."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from edge_agent.decision import Decision, PreRouteInfo
from edge_agent.knowledge.memory import Outcome, OutcomeMemory
from edge_agent.routing.preroute import PreRoute, combine
from edge_agent.settings import EdgeSettings, MemorySettings, PreRouteSettings, load_edge_settings

DIM = 64
SETTINGS = MemorySettings(k=10, min_similarity=0.3, prior=2.0, min_outcomes=4)


class FakeEmbedder:
    """Bag of words hashed into DIM dimensions: prompts sharing words are similar."""

    def __init__(self) -> None:
        self.calls: list[int] = []  # batch sizes

    def __call__(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls.append(len(texts))
        rows = np.zeros((len(texts), DIM), dtype=np.float32)
        for row, text in zip(rows, texts, strict=True):
            for word in re.findall(r"\w+", text.lower()):
                row[int(hashlib.sha256(word.encode()).hexdigest(), 16) % DIM] += 1.0
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        return (rows / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def axis(i: int, noise: float = 0.0, seed: int = 0) -> npt.NDArray[np.float32]:
    """A unit vector near basis vector ``i``."""
    v = np.zeros(DIM, dtype=np.float32)
    v[i] = 1.0
    if noise:
        v += noise * np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    unit: npt.NDArray[np.float32] = (v / np.linalg.norm(v)).astype(np.float32)
    return unit


def memory(settings: MemorySettings = SETTINGS, path: Path | None = None) -> OutcomeMemory:
    return OutcomeMemory(settings, FakeEmbedder(), path)


def fill(m: OutcomeMemory, model: str, cluster: int, right: bool, n: int, start: int = 0) -> None:
    for j in range(start, start + n):
        m.add(model, f"{model} prompt {cluster}-{j}", right, "calibration", axis(cluster, 0.05, j))


# -- the estimate --------------------------------------------------------------------------


def test_estimate_moves_toward_the_neighbours_outcomes() -> None:
    m = memory()
    fill(m, "m", 0, True, 10)  # near axis 0: right
    fill(m, "m", 1, False, 10)  # near axis 1: wrong
    near_right = m.estimate("m", axis(0))
    near_wrong = m.estimate("m", axis(1))
    assert near_right is not None and near_wrong is not None
    assert near_right.base_rate == pytest.approx(11 / 22)
    assert near_right.probability > 0.8
    assert near_wrong.probability < 0.2
    assert near_right.neighbours == 10  # k = 10: the far cluster is not among them
    assert near_right.max_similarity > 0.9
    assert near_right.outcomes == 20
    assert "10 similar prompts" in near_right.describe()


def test_far_neighbours_leave_the_base_rate() -> None:
    m = memory()
    fill(m, "m", 0, False, 6)
    fill(m, "m", 1, True, 2)
    far = m.estimate("m", axis(5))  # orthogonal to both clusters: similarity < 0.3
    assert far is not None
    assert far.support == 0.0 and far.neighbours == 0
    assert far.probability == pytest.approx(far.base_rate) == pytest.approx(3 / 10)


def test_few_neighbours_are_shrunk_toward_the_base_rate() -> None:
    m = memory()
    fill(m, "m", 2, True, 20)  # a base rate near 1
    fill(m, "m", 0, False, 1)
    one = m.estimate("m", axis(0))
    fill(m, "m", 0, False, 7, start=1)
    eight = m.estimate("m", axis(0))
    assert one is not None and eight is not None
    # One wrong neighbour pulls below the base rate, eight pull much further.
    assert eight.probability < one.probability < one.base_rate
    assert one.probability > 0.4  # one neighbour against prior = 2 at the base rate
    assert eight.probability < 0.3
    assert eight.support > one.support


def test_weight_falls_with_similarity() -> None:
    m = memory(MemorySettings(k=1, min_similarity=0.0, prior=1.0, min_outcomes=1))
    m.add("m", "the one", False, "feedback", axis(0))
    close = m.estimate("m", axis(0))
    halfway = m.estimate("m", (axis(0) + axis(1)) / np.sqrt(2))  # similarity 0.707
    assert close is not None and halfway is not None
    assert close.support == pytest.approx(1.0)
    assert halfway.support == pytest.approx(np.sqrt(0.5), abs=1e-6)
    assert close.probability < halfway.probability < close.base_rate


def test_too_few_outcomes_give_no_estimate() -> None:
    m = memory()
    assert m.estimate("m", axis(0)) is None  # empty
    fill(m, "m", 0, True, 3)
    assert m.estimate("m", axis(0)) is None  # 3 < min_outcomes = 4
    fill(m, "m", 0, True, 1, start=3)
    assert m.estimate("m", axis(0)) is not None


def test_models_are_kept_apart() -> None:
    m = memory()
    fill(m, "a", 0, True, 8)
    fill(m, "b", 0, False, 8)
    a, b = m.estimate("a", axis(0)), m.estimate("b", axis(0))
    assert a is not None and b is not None
    assert a.probability > 0.75 > 0.25 > b.probability
    assert m.estimate("c", axis(0)) is None
    assert m.size("a") == m.size("b") == 8 and m.size("c") == 0 and m.size() == 16


def test_the_newest_judgement_of_a_prompt_counts() -> None:
    m = memory(MemorySettings(k=5, min_outcomes=1))
    m.add("m", "same question", True, "calibration", axis(0))
    m.add("m", "same question", False, "feedback", axis(0))
    assert m.size("m") == 1
    (outcome,) = m.outcomes()
    assert not outcome.right and outcome.source == "feedback"


def test_max_entries_drops_the_oldest() -> None:
    m = memory(MemorySettings(max_entries=5, min_outcomes=1))
    for i in range(8):
        m.add("m", f"prompt {i}", i % 2 == 0, "feedback", axis(i))
    assert [o.prompt for o in m.outcomes()] == [f"prompt {i}" for i in range(3, 8)]
    found = m.estimate("m", axis(7))
    assert found is not None and found.max_similarity == pytest.approx(1.0)
    gone = m.estimate("m", axis(0))  # prompt 0 was dropped: nothing near axis 0 any more
    assert gone is not None and gone.max_similarity < 0.5


def test_invalid_outcomes_are_refused() -> None:
    from ridgeline_core.errors import InvalidRequestError

    m = memory()
    with pytest.raises(InvalidRequestError, match="source"):
        m.add("m", "a prompt", True, "guess", axis(0))  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="dimensions"):
        m.add("m", "one", True, "feedback", axis(0))
        m.add("m", "two", True, "feedback", np.ones(3))


# -- the file --------------------------------------------------------------------------------


def test_persistence_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state" / "outcome-memory.jsonl"
    first = memory(path=path)
    first.add("m", "What is the capital of France?", True, "calibration")
    first.add("m", "What is 347 times 29?", False, "feedback")
    first.add("m", "What is the capital of Spain?", True, "feedback")
    first.add("other", "Who wrote Hamlet?", False, "calibration")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["prompt"], r["model"], r["right"], r["source"]) for r in lines] == [
        (o.prompt, o.model, o.right, o.source) for o in first.outcomes()
    ]
    assert all(isinstance(r["time"], float) for r in lines)

    embedder = FakeEmbedder()
    second = OutcomeMemory(MemorySettings(min_outcomes=1), embedder, path)
    assert embedder.calls == []  # nothing is read or embedded before it is needed
    assert second.outcomes() == first.outcomes()
    assert embedder.calls == [4]  # one batch for the whole file
    query = FakeEmbedder()(["What is the capital of Italy?"])[0]
    a = first.estimate("m", query)
    b = second.estimate("m", query)
    assert a is None  # the first has min_outcomes 4 and only 3 for "m"
    assert b is not None and b.probability > b.base_rate


def test_adding_before_the_file_is_read_only_appends(tmp_path: Path) -> None:
    path = tmp_path / "memory.jsonl"
    embedder = FakeEmbedder()
    m = OutcomeMemory(SETTINGS, embedder, path)
    m.add("m", "What is 2 + 2?", True, "feedback")
    assert embedder.calls == []  # appended, not embedded
    assert len(path.read_text().splitlines()) == 1
    assert m.size("m") == 1 and embedder.calls == [1]


def test_appends_by_another_process_are_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "memory.jsonl"
    reader = memory(MemorySettings(min_outcomes=1), path)
    writer = memory(MemorySettings(min_outcomes=1), path)
    assert reader.size() == 0
    writer.add("m", "one", True, "feedback")
    writer.add("m", "two", False, "feedback")
    assert [o.prompt for o in reader.outcomes()] == ["one", "two"]
    reader.add("m", "three", True, "feedback")
    writer.add("m", "four", True, "feedback")
    assert [o.prompt for o in reader.outcomes()] == ["one", "two", "three", "four"]
    assert [o.prompt for o in writer.outcomes()] == ["one", "two", "three", "four"]


def test_the_file_is_compacted_and_bounded(tmp_path: Path) -> None:
    path = tmp_path / "memory.jsonl"
    m = memory(MemorySettings(max_entries=10, min_outcomes=1), path)
    m.size()  # read the (missing) file: from now on every add is held in memory too
    for i in range(200):
        m.add("m", f"prompt {i % 30}", i % 3 == 0, "feedback")
    assert m.size() == 10
    assert len(path.read_text().splitlines()) <= 10 + 64 + 1
    reread = memory(MemorySettings(max_entries=10, min_outcomes=1), path)
    assert reread.outcomes() == m.outcomes()
    assert len(path.read_text().splitlines()) <= 10 + 64 + 1


def test_a_long_file_is_cut_to_max_entries_when_read(tmp_path: Path) -> None:
    path = tmp_path / "memory.jsonl"
    rows = [Outcome(f"prompt {i}", "m", True, "calibration", float(i)) for i in range(300)]
    path.write_text("".join(json.dumps(r.__dict__) + "\n" for r in rows))
    m = memory(MemorySettings(max_entries=50, min_outcomes=1), path)
    assert [o.prompt for o in m.outcomes()] == [f"prompt {i}" for i in range(250, 300)]
    assert len(path.read_text().splitlines()) == 50  # rewritten: 250 stale lines gone


def test_malformed_lines_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "memory.jsonl"
    good = {"prompt": "fine", "model": "m", "right": True, "source": "feedback", "time": 1.0}
    path.write_text(
        json.dumps(good) + "\n"
        "not json\n"
        + json.dumps({**good, "right": "yes"}) + "\n"
        + json.dumps({**good, "source": "rumour"}) + "\n"
        + "\n"
        + json.dumps({**good, "prompt": "unfinished"})  # no newline: still being written
    )  # fmt: skip
    m = memory(MemorySettings(min_outcomes=1), path)
    with caplog.at_level(logging.WARNING, logger="edge_agent.knowledge.memory"):
        assert [o.prompt for o in m.outcomes()] == ["fine"]
    assert "skipped 3 malformed lines" in caplog.text


# -- the pre-route ------------------------------------------------------------------------


def test_combine_is_the_rules_when_the_memory_says_the_base_rate() -> None:
    assert combine(0.7, 0.4, 0.4, weight=1.0) == pytest.approx(0.7)
    assert combine(0.7, 0.1, 0.4, weight=0.0) == pytest.approx(0.7)
    assert combine(0.7, 0.1, 0.4, weight=1.0) < combine(0.7, 0.2, 0.4, weight=1.0) < 0.7
    assert combine(0.7, 0.1, 0.4, weight=2.0) < combine(0.7, 0.1, 0.4, weight=1.0)
    assert 0.7 < combine(0.7, 0.9, 0.4, weight=1.0) < 1.0
    assert 0.0 < combine(0.0, 0.9, 0.4, weight=1.0) < 0.2  # the rules' 0 is not absolute


def route_with_memory(weight: float = 1.0) -> tuple[PreRoute, OutcomeMemory, FakeEmbedder]:
    embed = FakeEmbedder()
    m = OutcomeMemory(SETTINGS, embed, None)
    settings = PreRouteSettings(memory=SETTINGS.model_copy(update={"weight": weight}))
    right = ["capital of France", "capital of Spain", "capital of Italy", "author of Hamlet"]
    wrong = ["haiku about rust", "haiku about autumn", "haiku about the sea", "poem about rain"]
    for prompt in right:
        m.add("m", f"What is the {prompt}?", True, "calibration")
    for prompt in wrong:
        m.add("m", f"Write a {prompt}.", False, "calibration")
    return PreRoute(settings, m), m, embed


def test_predict_with_memory_reports_both_parts() -> None:
    route, _, embed = route_with_memory()
    prompt = "Write a haiku about winter."
    rules = route.predict(prompt)
    assert rules.memory is None and rules.rules is None  # no vector: rules alone
    vector = embed([prompt])[0]
    assert route.predict(prompt, vector) == rules  # no model: rules alone
    found = route.predict(prompt, vector, "m")
    assert found.memory is not None and found.rules == rules.confidence
    assert found.memory.probability < found.memory.base_rate
    assert found.confidence < rules.confidence
    assert "rules 0.70" in found.describe() and "memory" in found.describe()
    easy = route.predict("What is the capital of Peru?", embed(["capital of Peru"])[0], "m")
    assert easy.confidence > rules.confidence
    assert route.predict(prompt, vector, "another-model") == rules  # no outcomes of its own


def test_weight_zero_leaves_the_rules() -> None:
    route, _, embed = route_with_memory(weight=0.0)
    prompt = "Write a haiku about winter."
    found = route.predict(prompt, embed([prompt])[0], "m")
    assert found.memory is not None
    assert found.confidence == pytest.approx(route.predict(prompt).confidence)


def test_memory_settings_defaults_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = PreRouteSettings().memory
    assert not settings.enabled  # needs the embedding model built
    assert settings.path is None and settings.min_outcomes >= 1
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    env = {
        "RIDGELINE_EDGE_PREROUTE__MEMORY__ENABLED": "true",
        "RIDGELINE_EDGE_PREROUTE__MEMORY__K": "7",
        "RIDGELINE_EDGE_PREROUTE__MEMORY__PATH": str(tmp_path / "m.jsonl"),
    }
    loaded = load_edge_settings(config_file=None, env=env).settings.preroute.memory
    assert loaded.enabled and loaded.k == 7 and loaded.path == tmp_path / "m.jsonl"
    with pytest.raises(ValueError, match="min_similarity"):
        MemorySettings(min_similarity=1.0)


def test_old_preroute_records_still_load() -> None:
    old: dict[str, Any] = {"predicted": 0.7, "hints": [], "skipped_local": False}
    assert Decision.from_dict(_decision_dict(preroute=old)).preroute == PreRouteInfo(0.7, [], False)
    new = {**old, "rules": 0.7, "memory": 0.2, "memory_support": 3.5, "memory_neighbours": 6}
    loaded = Decision.from_dict(_decision_dict(preroute=new)).preroute
    assert loaded == PreRouteInfo(0.7, [], False, 0.7, 0.2, 3.5, 6)
    assert Decision.from_dict(_decision_dict(preroute=new)).to_dict()["preroute"] == new


def _decision_dict(**changes: Any) -> dict[str, Any]:
    timings = {"decide_ms": 0.1, "preroute_ms": 0.1, "local_ms": None, "broker_ms": None}
    return {
        "path": "local", "mode": "auto", "reason": "r", "confidence": 0.8,
        "confidence_info": None, "threshold": 0.55, "threshold_raw": 0.55,
        "threshold_reason": "", "threshold_terms": [], "telemetry": {},
        "telemetry_sources": [], "gate": None, "preroute": None, "aborted": None,
        "broker": None, "timings": {**timings, "total_ms": 1.0}, **changes,
    }  # fmt: skip


# -- the agent ------------------------------------------------------------------------------


def test_feedback_command_appends_to_the_memory(edge_env: dict[str, str], tmp_path: Path) -> None:
    from clirun import run

    path = tmp_path / "state" / "ridgeline" / "outcome-memory.jsonl"  # XDG_STATE_HOME
    result = run("edge-agent", "feedback", "Write a haiku about rust.", "--wrong", env=edge_env)
    assert result.returncode == 0, result.stderr
    assert f"answered wrong (in {path})" in result.stdout
    assert "preroute.memory.enabled" in result.stderr  # off by default: say how to use it
    env = {**edge_env, "RIDGELINE_EDGE_PREROUTE__MEMORY__ENABLED": "true"}
    result = run("edge-agent", "feedback", "Who wrote Hamlet?", "--right", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["prompt"], r["right"], r["source"]) for r in rows] == [
        ("Write a haiku about rust.", False, "feedback"),
        ("Who wrote Hamlet?", True, "feedback"),
    ]
    missing = run("edge-agent", "feedback", "Who wrote Hamlet?", env=edge_env)
    assert missing.returncode == 2 and "--right or --wrong" in missing.stderr
    unknown = run("edge-agent", "feedback", "x", "--right", "--model", "nope", env=edge_env)
    assert unknown.returncode != 0 and "unknown model" in unknown.stderr


CODE_PROMPT = "Write a Python function that sorts a list."  # the rules skip it at τ 0.55


def agent_settings(store: Path, tmp_path: Path, **memory: Any) -> EdgeSettings:
    return EdgeSettings.model_validate(
        {
            "models": {"store_dir": str(store), "default": "smollm2-135m-instruct"},
            "runtime": {"threads": 2},
            "generation": {"max_tokens": 8},
            "budget": {"state_file": str(tmp_path / "budget.json")},
            "telemetry": {"sources": []},
            "preroute": {
                "memory": {"path": str(tmp_path / "memory.jsonl"), "min_outcomes": 4, **memory}
            },
        }
    )


def test_an_embedder_failure_leaves_the_rules(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An empty store: the embedding model is not there, the answer still comes."""
    from edge_agent import EdgeAgent
    from edge_agent.evaluation.simulate import DryRunBroker

    settings = agent_settings(tmp_path / "empty-store", tmp_path, enabled=True)
    with (
        EdgeAgent(settings, broker=DryRunBroker(), background=False) as agent,
        caplog.at_level(logging.WARNING, logger="edge_agent.agent"),
    ):
        answer = agent.ask(CODE_PROMPT)
    assert answer.source == "skipped-local"
    preroute = answer.decision.preroute
    assert preroute is not None and preroute.skipped_local
    assert preroute.memory is None and preroute.rules is None
    assert preroute.predicted == pytest.approx(0.3)
    assert "pre-route memory unavailable" in caplog.text


@pytest.mark.model
def test_feedback_moves_the_prediction_for_a_paraphrase(
    minilm: Any, smollm2_path: Path, model_store: Any, tmp_path: Path
) -> None:
    """Real encoder, real agent: judged prompts move the pre-route for a similar one."""
    from edge_agent import EdgeAgent
    from edge_agent.evaluation.simulate import DryRunBroker

    wrong = [
        "Write a haiku about rust.",
        "Write a haiku about the autumn moon.",
        "Compose a short poem about falling leaves.",
    ]
    right = [
        "What is the capital of France?",
        "What is the capital of Japan?",
        "Who wrote Romeo and Juliet?",
        "What colour is the sky on a clear day?",
    ]
    paraphrase = "Please write me a haiku about rusty iron."
    # The memory's parameters are set here, not taken from the tuned defaults.
    tuned = {"k": 10, "min_similarity": 0.3, "prior": 1.0, "weight": 1.0}
    settings = agent_settings(model_store.root, tmp_path, enabled=True, **tuned)
    with EdgeAgent(settings, broker=DryRunBroker(), background=False) as agent:
        before = agent.ask(paraphrase, threshold=0.3).decision.preroute
        assert before is not None and before.memory is None  # nothing judged yet
        for prompt in wrong:
            agent.feedback(prompt, right=False)
        for prompt in right:
            agent.feedback(prompt, right=True)
        assert agent.memory.size("smollm2-135m-instruct") == 7
        after = agent.ask(paraphrase, threshold=0.3).decision.preroute
        easy = agent.ask("What is the capital of Italy?", threshold=0.3).decision.preroute
    assert after is not None and after.memory is not None and after.rules is not None
    assert after.rules == pytest.approx(before.predicted)
    assert after.memory < (4 + 1) / (7 + 2) - 0.15  # well under the memory's base rate
    assert after.predicted < before.predicted - 0.1
    assert after.memory_neighbours is not None and after.memory_neighbours >= 1
    assert easy is not None and easy.memory is not None and easy.predicted > after.predicted
    # A new agent reads the feedback back from the file.
    with EdgeAgent(settings, broker=DryRunBroker(), background=False) as agent:
        assert agent.memory.size("smollm2-135m-instruct") == 7
