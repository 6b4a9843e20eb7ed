"""Model collaboration on a real broker process: routes, cascades and ensembles over the
real SmolLM2 and Gemma models (llama.cpp), with OpenAI-compatible members whose upstream is
down, called through the project's gRPC client."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from brokerproc import BrokerProcess
from clirun import run as run_command
from conftest import GEMMA, SMOLLM2, MiniLM, isolated_env
from llamaserver import API_KEY, UPSTREAM_ALIAS, Upstream, running_upstream
from support import broker_env

from ridgeline.v1 import broker_pb2
from ridgeline_core import errors
from ridgeline_core.client import BrokerClient, build_request
from ridgeline_core.store import ModelStore

pytestmark = pytest.mark.model

PRICES = {SMOLLM2: (0.001, 0.002), GEMMA: (0.002, 0.004)}  # per 1k prompt, completion
JUDGE_THRESHOLD = 0.27  # Gemma's P(yes): 0.34 for Shakespeare, 0.20 for Dickens


def strategies_config(down_port: int, upstream_url: str, router_file: Path) -> str:
    prices = "\n".join(
        f'"{m}" = {{ prompt_per_1k = {p}, completion_per_1k = {c} }}'
        for m, (p, c) in PRICES.items()
    )
    return f"""
[limits]
requests_per_minute = 0
tokens_per_minute = 0
[models]
serve = ["{SMOLLM2}", "{GEMMA}"]
default = "{SMOLLM2}"
[prices]
{prices}
[[openai]]
name = "upstream"
base_url = "{upstream_url}"
model = "{UPSTREAM_ALIAS}"
api_key = "{API_KEY}"
[[openai]]
name = "down-a"
base_url = "http://127.0.0.1:{down_port}/v1"
[[openai]]
name = "down-b"
base_url = "http://127.0.0.1:{down_port}/v1"

[[strategies]]
name = "by-rules"
kind = "route"
models = ["{SMOLLM2}", "{GEMMA}"]
[[strategies.rules]]
task = "math"
model = "{GEMMA}"
[[strategies.rules]]
min_prompt_chars = 200
model = "{GEMMA}"

[[strategies]]
name = "fast-then-strong"
kind = "cascade"
models = ["{SMOLLM2}", "{GEMMA}"]
verifier = "verifier:{GEMMA}"
threshold = {JUDGE_THRESHOLD}

[[strategies]]
name = "learned"
kind = "route"
models = ["{SMOLLM2}", "{GEMMA}"]
router = "learned"
router_file = "{router_file}"
willingness_to_pay = 100.0

[[strategies]]
name = "upstream-first"
kind = "cascade"
models = ["upstream", "{GEMMA}"]
verifier = "confidence"
threshold = 0.0

[[strategies]]
name = "self-confident"
kind = "cascade"
models = ["{SMOLLM2}", "{GEMMA}"]
verifier = "confidence"
threshold = 1.0

[[strategies]]
name = "agreeing"
kind = "cascade"
models = ["{SMOLLM2}", "{GEMMA}"]
verifier = "agreement"
samples = 2
threshold = 0.5

[[strategies]]
name = "judged-upstream"
kind = "ensemble"
combine = "best"
verifier = "verifier:upstream"
models = ["{SMOLLM2}", "{GEMMA}"]

[[strategies]]
name = "verify-draft"
kind = "cascade"
models = ["{GEMMA}"]
verifier = "verifier:{GEMMA}"
threshold = {JUDGE_THRESHOLD}

[[strategies]]
name = "vote3"
kind = "ensemble"
models = ["{SMOLLM2}"]
samples = 3

[[strategies]]
name = "vote-with-down"
kind = "ensemble"
models = ["{SMOLLM2}", "down-a", "{GEMMA}"]

[[strategies]]
name = "all-down"
kind = "ensemble"
models = ["down-a", "down-b"]

[[strategies]]
name = "pick-best"
kind = "ensemble"
combine = "best"
verifier = "verifier:{GEMMA}"
models = ["{SMOLLM2}", "{GEMMA}"]

[[strategies]]
name = "fused"
kind = "ensemble"
combine = "fuse"
aggregator = "{GEMMA}"
models = ["{SMOLLM2}", "{GEMMA}"]
"""


@pytest.fixture(scope="module")
def down_port() -> Iterator[int]:
    """A loopback port bound but never listening: connections to it are refused."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


@pytest.fixture(scope="module")
def upstream(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    with running_upstream(smollm2_path, tmp_path_factory.mktemp("upstream")) as server:
        yield server


ARITHMETIC = [f"What is {a} plus {b}?" for a, b in [(3, 4), (12, 9), (25, 17), (8, 6), (40, 2)]]
ARITHMETIC += [f"What is {a} times {b}?" for a, b in [(3, 7), (6, 6), (9, 4), (11, 5), (2, 13)]]
CAPITALS = [
    f"What is the capital of {country}?"
    for country in ("Peru", "Kenya", "Norway", "Japan", "Chile", "Egypt", "Canada", "Brazil")
]
CAPITALS += ["Which river flows through Cairo?", "Which ocean lies west of Portugal?"]


@pytest.fixture(scope="module")
def router_file(
    minilm: MiniLM, model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A router trained (by the real command) on outcomes where SmolLM2 is right on
    arithmetic and Gemma on capitals."""
    root = tmp_path_factory.mktemp("router")
    rows = [
        {"prompt": prompt, "model": model, "correct": (prompt in ARITHMETIC) == (model == SMOLLM2)}
        for prompt in ARITHMETIC + CAPITALS
        for model in (SMOLLM2, GEMMA)
    ]
    outcomes = root / "outcomes.jsonl"
    outcomes.write_text("\n".join(json.dumps(row) for row in rows), encoding="utf-8")
    out = root / "router.json"
    env = isolated_env(model_store, root)
    result = run_command(
        "cloud-broker", "router", "train", "--outcomes", str(outcomes), "--out", str(out), env=env
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def broker(
    smollm2_path: Path,
    gemma_path: Path,
    model_store: ModelStore,
    down_port: int,
    upstream: Upstream,
    router_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BrokerProcess]:
    root = tmp_path_factory.mktemp("strategies-broker")
    process = BrokerProcess(
        ["serve", "--dev", "--listen", "127.0.0.1:0"],
        broker_env(model_store, root),
        config=strategies_config(down_port, upstream.base_url, router_file),
        tmp_path=root,
    )
    yield process
    process.kill()


@pytest.fixture(scope="module")
def client(broker: BrokerProcess) -> Iterator[BrokerClient]:
    with BrokerClient(broker.address, plaintext=True, timeout_s=180) as broker_client:
        yield broker_client


def run(
    client: BrokerClient, prompt: str, name: str, **fields: object
) -> tuple[str, broker_pb2.GenerateResult, list[str]]:
    """The answer text, the result and the models the deltas came from."""
    draft = fields.pop("draft", None)
    request = build_request(prompt, max_tokens=fields.pop("max_tokens", 24), local_draft=draft)  # type: ignore[arg-type]
    request.strategy.name = name
    for key, value in fields.items():
        if key == "max_cost":
            request.max_cost = value  # type: ignore[assignment]
        else:
            setattr(request.strategy, key, value)
    text, models, results = [], [], []
    for event in client.generate_request(request):
        if event.HasField("delta"):
            text.append(event.delta.text)
            models.append(event.delta.model)
        else:
            results.append(event.result)
    assert len(results) == 1
    return "".join(text), results[0], models


def price(member: broker_pb2.MemberRecord) -> float:
    prompt, completion = PRICES.get(member.model, (0.0, 0.0))
    usage = member.usage
    return (prompt * usage.prompt_tokens + completion * usage.completion_tokens) / 1000


def assert_costs_add_up(result: broker_pb2.GenerateResult) -> None:
    for member in result.members:
        assert member.cost == pytest.approx(price(member), rel=1e-6, abs=1e-12)
    assert result.cost == pytest.approx(sum(m.cost for m in result.members), rel=1e-6)
    assert result.usage.prompt_tokens == sum(m.usage.prompt_tokens for m in result.members)


def running(broker: BrokerProcess, model: str) -> float:
    return broker.metrics()[f'ridgeline_broker_backend_running{{model="{model}"}}']


# -- listing ----------------------------------------------------------------------------------


def test_list_models_shows_the_strategies_and_prices(client: BrokerClient) -> None:
    listing = client.list_models()
    named = {s.name: s for s in listing.named_strategies}
    assert set(named) >= {"by-rules", "fast-then-strong", "vote3", "pick-best", "fused"}
    assert named["fast-then-strong"].kind == broker_pb2.Strategy.KIND_CASCADE
    assert list(named["fast-then-strong"].models) == [SMOLLM2, GEMMA]
    assert named["fast-then-strong"].method == f"verifier:{GEMMA}"
    assert named["by-rules"].method == "rules"
    assert named["fused"].method == f"fuse:{GEMMA}"
    models = {m.name: m for m in listing.models}
    assert models[GEMMA].prompt_price_per_1k == pytest.approx(0.002)
    assert models[GEMMA].completion_price_per_1k == pytest.approx(0.004)
    assert models["down-a"].prompt_price_per_1k == 0


# -- route ------------------------------------------------------------------------------------


def test_route_follows_its_rules(client: BrokerClient) -> None:
    _, result, _ = run(client, "What is the capital of France?", "by-rules")
    assert result.answer_model == SMOLLM2  # no rule matched: the first model
    assert result.strategy == broker_pb2.Strategy.KIND_ROUTE
    assert result.strategy_name == "by-rules"
    _, result, models = run(client, "What is 12 plus 30?", "by-rules", task="math")
    assert result.answer_model == GEMMA and set(models) == {GEMMA}
    assert any("rule 1" in note for note in result.notes)
    long_prompt = "Please answer briefly. " * 10 + "What is the capital of Spain?"
    _, result, _ = run(client, long_prompt, "by-rules")
    assert result.answer_model == GEMMA
    assert [(m.model, m.role, m.accepted) for m in result.members] == [(GEMMA, "answer", True)]
    assert_costs_add_up(result)


def test_a_learned_router_routes_by_what_it_learned(client: BrokerClient) -> None:
    _, result, _ = run(client, "What is 16 plus 23?", "learned")
    assert result.answer_model == SMOLLM2
    assert 0.5 < result.members[0].score <= 1  # its predicted P(correct)
    _, result, _ = run(client, "What is the capital of Italy?", "learned")
    assert result.answer_model == GEMMA
    # nothing is worth paying for: the cheapest model, whatever the router predicts
    _, result, _ = run(client, "What is the capital of Italy?", "learned", willingness_to_pay=0.0)
    assert result.answer_model == SMOLLM2
    assert any("P(correct)" in note for note in result.notes)


# -- cascade ----------------------------------------------------------------------------------


def draft(text: str) -> broker_pb2.LocalDraft:
    return broker_pb2.LocalDraft(text=text, confidence=0.3, model="edge-model", completion_tokens=3)


def test_cascade_accepts_a_good_draft_without_generating(client: BrokerClient) -> None:
    text, result, models = run(
        client,
        "Who wrote Romeo and Juliet?",
        "fast-then-strong",
        draft=draft("William Shakespeare"),
    )
    assert text == "William Shakespeare"
    assert result.HasField("draft_verdict") and result.draft_verdict.accepted
    assert result.draft_verdict.verifier == f"verifier:{GEMMA}"
    assert result.draft_verdict.score >= JUDGE_THRESHOLD
    roles = [(m.model, m.role) for m in result.members]
    assert roles == [("edge-model", "draft"), (GEMMA, "verifier")]  # no model generated
    verifier = result.members[1]
    assert verifier.usage.prompt_tokens > 0 and verifier.usage.completion_tokens == 0
    assert result.usage.completion_tokens == 3  # only the draft's own tokens
    assert result.answer_model == "edge-model" and models == ["edge-model"]
    assert_costs_add_up(result)


def test_cascade_passes_a_bad_draft_on(client: BrokerClient) -> None:
    _, result, _ = run(
        client, "Who wrote Romeo and Juliet?", "fast-then-strong", draft=draft("Charles Dickens")
    )
    assert result.HasField("draft_verdict") and not result.draft_verdict.accepted
    assert result.draft_verdict.score < JUDGE_THRESHOLD
    answers = [m for m in result.members if m.role == "answer"]
    assert answers and answers[0].model == SMOLLM2  # the cascade ran from its first model
    assert sum(m.accepted for m in answers) == 1
    assert result.answer_model in (SMOLLM2, GEMMA)
    assert_costs_add_up(result)


def test_max_cost_stops_a_cascade_before_a_member_it_cannot_afford(
    client: BrokerClient,
) -> None:
    # enough for SmolLM2's answer (about 0.00006 at most), not for Gemma's verdict after it
    _, result, _ = run(
        client, "What is the capital of France?", "fast-then-strong", max_cost=0.0002
    )
    assert [m.model for m in result.members] == [SMOLLM2]
    assert any("max_cost" in note for note in result.notes)
    assert result.cost <= 0.0002
    assert_costs_add_up(result)
    with pytest.raises(errors.CostLimitError) as excinfo:
        run(client, "What is the capital of France?", "fast-then-strong", max_cost=1e-7)
    assert excinfo.value.status == "FAILED_PRECONDITION"
    assert SMOLLM2 in str(excinfo.value)


def test_confidence_from_an_openai_upstreams_logprobs(client: BrokerClient) -> None:
    _, result, _ = run(client, "What is the capital of France?", "upstream-first")
    first = result.members[0]
    assert first.model == "upstream" and first.role == "answer"
    assert first.HasField("score") and 0 < first.score <= 1  # from the upstream's logprobs
    assert first.accepted and result.answer_model == "upstream"  # threshold 0 accepts it


def test_confidence_from_llama_cpp_token_probabilities(client: BrokerClient) -> None:
    _, result, _ = run(client, "What is the capital of France?", "self-confident")
    first, second = result.members[0], result.members[1]
    assert first.model == SMOLLM2 and first.HasField("score") and 0 < first.score < 1
    assert "below threshold" in first.note and not first.accepted  # threshold 1: passed on
    assert second.model == GEMMA and second.accepted


def test_agreement_of_samples(client: BrokerClient) -> None:
    _, result, _ = run(client, "What is the capital of France?", "agreeing")
    samples = [m for m in result.members if m.role == "sample"]
    assert len(samples) == 2 and {m.model for m in samples} == {SMOLLM2}
    first = result.members[0]
    assert first.model == SMOLLM2 and first.HasField("score")
    assert first.score == sum(m.accepted for m in samples) / 2


# -- ensemble ---------------------------------------------------------------------------------


def test_vote_over_three_members(client: BrokerClient) -> None:
    _, result, _ = run(client, "What is the capital of France?", "vote3")
    answers = [m for m in result.members if m.role == "answer"]
    assert len(answers) == 3 and {m.model for m in answers} == {SMOLLM2}
    votes = [m.vote for m in answers]
    winners = [m for m in answers if m.accepted]
    assert winners and len({m.vote for m in winners}) == 1
    assert votes.count(winners[0].vote) == max(votes.count(v) for v in votes)
    assert result.strategy == broker_pb2.Strategy.KIND_ENSEMBLE
    assert_costs_add_up(result)


def test_a_member_whose_upstream_is_down_is_dropped_with_a_note(client: BrokerClient) -> None:
    text, result, _ = run(client, "What is the capital of France?", "vote-with-down")
    assert text
    down = [m for m in result.members if m.model == "down-a"]
    assert down and "unavailable" in down[0].note and not down[0].accepted
    assert any("down-a" in note and "dropped" in note for note in result.notes)
    assert {m.model for m in result.members if m.role == "answer" and not m.note} == {
        SMOLLM2,
        GEMMA,
    }


def test_all_members_down_is_unavailable_naming_them(client: BrokerClient) -> None:
    with pytest.raises(errors.UnavailableError) as excinfo:
        run(client, "What is the capital of France?", "all-down")
    assert excinfo.value.status == "UNAVAILABLE"
    assert "down-a" in str(excinfo.value) and "down-b" in str(excinfo.value)


def test_pick_best_by_the_verifier(client: BrokerClient) -> None:
    _, result, _ = run(client, "Who wrote Romeo and Juliet?", "pick-best")
    answers = [m for m in result.members if m.role == "answer"]
    verifiers = [m for m in result.members if m.role == "verifier"]
    assert len(answers) == 2 and len(verifiers) == 2
    assert all(v.usage.completion_tokens == 0 for v in verifiers)
    chosen = [m for m in answers if m.accepted]
    assert len(chosen) == 1 and chosen[0].score == max(m.score for m in answers)
    assert result.answer_model == chosen[0].model


def test_a_verifier_behind_an_openai_upstream_scores_without_generating(
    client: BrokerClient,
) -> None:
    _, result, _ = run(client, "Who wrote Romeo and Juliet?", "judged-upstream")
    verifiers = [m for m in result.members if m.role == "verifier"]
    assert len(verifiers) == 2 and {m.model for m in verifiers} == {"upstream"}
    assert all(m.usage.completion_tokens == 0 and 0 <= m.score <= 1 for m in verifiers)


def test_fuse_streams_the_aggregators_answer(client: BrokerClient) -> None:
    text, result, models = run(client, "What is the capital of France?", "fused")
    roles = [(m.model, m.role) for m in result.members]
    assert sorted(roles[:2]) == sorted([(SMOLLM2, "answer"), (GEMMA, "answer")])
    assert roles[2] == (GEMMA, "aggregator") and result.members[2].accepted
    assert text and set(models) == {GEMMA} and result.answer_model == GEMMA


def test_a_request_can_spell_out_kind_and_models(client: BrokerClient) -> None:
    request = build_request("What is the capital of France?", max_tokens=16)
    request.strategy.kind = broker_pb2.Strategy.KIND_ENSEMBLE
    request.strategy.models.extend([SMOLLM2, GEMMA])
    results = [e.result for e in client.generate_request(request) if e.HasField("result")]
    assert [m.model for m in results[0].members] == [SMOLLM2, GEMMA]
    assert results[0].strategy_name == ""
    request.strategy.models.append("no-such-model")
    with pytest.raises(errors.UnknownModelError):
        list(client.generate_request(request))
    request = build_request("hi")
    request.strategy.name = "vote3"
    request.strategy.kind = broker_pb2.Strategy.KIND_CASCADE
    with pytest.raises(errors.InvalidRequestError, match="is a ensemble"):
        list(client.generate_request(request))


# -- deadlines, cancel, metrics -----------------------------------------------------------------


def test_deadline_and_cancel_stop_every_member(client: BrokerClient, broker: BrokerProcess) -> None:
    story = "Write a long story about a lighthouse keeper and a storm."
    request = build_request(story, max_tokens=400)
    request.strategy.name = "vote-with-down"
    with pytest.raises(errors.RidgelineError) as excinfo:
        list(client.generate_request(request, timeout_s=1.5))
    assert excinfo.value.status == "DEADLINE_EXCEEDED"
    stream = client.generate_request(request)
    canceller = threading.Timer(1.5, stream.cancel)
    canceller.start()
    with pytest.raises(errors.RidgelineError):
        list(stream)
    canceller.join()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if running(broker, SMOLLM2) == 0 and running(broker, GEMMA) == 0:
            break
        time.sleep(0.1)
    assert running(broker, SMOLLM2) == 0 and running(broker, GEMMA) == 0


def test_metrics_count_cost_per_strategy(client: BrokerClient, broker: BrokerProcess) -> None:
    before = broker.metrics().get('ridgeline_broker_cost_total{strategy="by-rules"}', 0.0)
    _, result, _ = run(client, "What is the capital of Italy?", "by-rules")
    after = broker.metrics()['ridgeline_broker_cost_total{strategy="by-rules"}']
    assert after - before == pytest.approx(result.cost, rel=1e-6)
    members = broker.metrics()
    labels = f'model="{SMOLLM2}",role="answer",strategy="by-rules"'
    key = f"ridgeline_broker_strategy_members_total{{{labels}}}"
    assert members[key] >= 1


# -- the edge ---------------------------------------------------------------------------------


def edge_ask(broker: BrokerProcess, env: dict[str, str], *args: str) -> dict[str, Any]:
    result = run_command(
        "edge-agent", "ask", "--json", "--dev", "--broker", broker.address, *args, env=env
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_the_edge_records_the_brokers_verdict_on_its_draft(
    broker: BrokerProcess, edge_env: dict[str, str], tmp_path: Path
) -> None:
    # τ 1: the local answer is always short of it, so it goes up, whole, as the draft
    env = {
        **edge_env,
        "RIDGELINE_EDGE_PREROUTE__ENABLED": "false",
        "RIDGELINE_EDGE_ABORT__ENABLED": "false",
    }
    answer = edge_ask(
        broker, env, "--threshold", "1", "--strategy", "verify-draft", "--max-tokens", "12",
        "Who wrote Romeo and Juliet?",
    )  # fmt: skip
    info = answer["decision"]["broker"]
    assert info["strategy"] == "cascade" and info["strategy_name"] == "verify-draft"
    roles = [(m["model"], m["role"]) for m in info["members"]]
    assert roles[:2] == [(SMOLLM2, "draft"), (GEMMA, "verifier")]
    verdict = info["draft_verdict"]
    assert verdict["verifier"] == f"verifier:{GEMMA}" and 0 <= verdict["score"] <= 1
    assert info["verdict_recorded"] and info["cost"] >= 0
    if verdict["accepted"]:  # the broker returned the device's own draft as the answer
        assert answer["model"] == SMOLLM2 and len(info["members"]) == 2
    memory = next(Path(edge_env["XDG_STATE_HOME"]).rglob("outcome-memory.jsonl"))
    remembered = [json.loads(line) for line in memory.read_text().splitlines()]
    assert remembered[-1]["source"] == "broker"
    assert remembered[-1]["model"] == SMOLLM2
    assert remembered[-1]["right"] == verdict["accepted"]
    assert remembered[-1]["prompt"] == "Who wrote Romeo and Juliet?"


def test_the_brokers_verdict_on_a_knowledge_draft_goes_to_the_collection(
    broker: BrokerProcess, edge_env: dict[str, str], minilm: MiniLM, tmp_path: Path
) -> None:
    """A draft answered from local knowledge (escalate = allowed sends it) is judged by the
    broker; the verdict is kept by the collection it drew on, not the outcome memory."""
    (tmp_path / "notes.md").write_text(
        "# Notes\n\n## Parking\n\nThe Tallow Street office has 14 parking spaces.\n"
    )
    env = {
        **edge_env,
        "RIDGELINE_EDGE_PREROUTE__ENABLED": "false",
        "RIDGELINE_EDGE_ABORT__ENABLED": "false",
    }
    added = run_command(
        "edge-agent", "knowledge", "add", "notes", str(tmp_path / "notes.md"),
        "--escalate", "allowed", env=env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    answer = edge_ask(
        broker, env, "--threshold", "1", "--strategy", "verify-draft", "--max-tokens", "12",
        "--knowledge", "notes", "How many parking spaces does the Tallow Street office have?",
    )  # fmt: skip
    info = answer["decision"]["broker"]
    assert info["draft_verdict"] is not None and info["verdict_recorded"]
    listed = run_command("edge-agent", "knowledge", "list", "--json", env=env)
    collections = json.loads(listed.stdout)["collections"]
    assert [(c["name"], c["judged"]) for c in collections] == [("notes", 1)]
    assert not list(Path(edge_env["XDG_STATE_HOME"]).rglob("outcome-memory.jsonl")) or all(
        "Tallow" not in line
        for f in Path(edge_env["XDG_STATE_HOME"]).rglob("outcome-memory.jsonl")
        for line in f.read_text().splitlines()
    )


def test_the_edge_shows_a_strategys_members_and_cost(
    broker: BrokerProcess, edge_env: dict[str, str]
) -> None:
    answer = edge_ask(
        broker, edge_env, "--mode", "cloud", "--strategy", "vote3", "--max-tokens", "8",
        "What is the capital of France?",
    )  # fmt: skip
    info = answer["decision"]["broker"]
    assert info["strategy"] == "ensemble" and info["strategy_name"] == "vote3"
    assert len(info["members"]) == 3 and info["cost"] == pytest.approx(
        sum(m["cost"] for m in info["members"])
    )
    assert info["draft_verdict"] is None and not info["verdict_recorded"]
    result = run_command(
        "edge-agent", "ask", "--dev", "--broker", broker.address, "--mode", "cloud",
        "--strategy", "vote3", "--max-tokens", "8", "What is the capital of France?",
        env=edge_env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ensemble vote3:" in result.stderr and "cost" in result.stderr


def test_the_edge_names_an_unknown_strategy(
    broker: BrokerProcess, edge_env: dict[str, str]
) -> None:
    result = run_command(
        "edge-agent", "ask", "--json", "--dev", "--broker", broker.address,
        "--strategy", "no-such-strategy", "--threshold", "1", "--max-tokens", "8",
        "What is the capital of France?",
        env=edge_env,
    )  # fmt: skip
    assert result.returncode == 4, result.stderr  # NOT_FOUND: not a quiet local answer
    error = json.loads(result.stdout)["error"]
    assert error["kind"] == "unknown_strategy"
    assert "unknown strategy 'no-such-strategy'" in error["message"]
    assert "verify-draft" in error["message"]  # the configured ones are listed
