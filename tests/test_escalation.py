"""Hybrid escalation end to end: the real SmolLM2 on the edge, a real broker process
(Gemma-3-270M) on loopback, real gRPC. Telemetry comes from replayed traces so that each
scenario is the same on every machine."""

from __future__ import annotations

import itertools
import json
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from brokerproc import BrokerProcess
from clirun import run
from conftest import GEMMA, SMOLLM2
from support import BAD, EASY, gemma_broker

from edge_agent import EdgeAgent, EdgeSettings
from edge_agent.telemetry import StepReplaySource, TelemetrySampler, TelemetryTrace
from ridgeline_core.store import ModelStore

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def broker(
    smollm2_path: Path,
    gemma_path: Path,
    shared_broker: BrokerProcess,
) -> BrokerProcess:
    return shared_broker  # one for the session (conftest.py)


def settings(
    model_store: ModelStore, tmp_path: Path, address: str, **sections: dict[str, Any]
) -> EdgeSettings:
    data: dict[str, Any] = {
        "models": {"store_dir": str(model_store.root), "default": SMOLLM2},
        "runtime": {"threads": 2},
        "generation": {"max_tokens": 64},
        "broker": {"address": address, "plaintext": True},
        "budget": {"state_file": str(tmp_path / "budget.json")},
        "telemetry": {"sources": []},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return EdgeSettings.model_validate(data)


def write_trace(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps({"t": i, **row}) + "\n" for i, row in enumerate(rows)))
    return path


def replay_agent(
    edge: EdgeSettings, trace: Path
) -> tuple[EdgeAgent, StepReplaySource, TelemetrySampler]:
    source = StepReplaySource(TelemetryTrace.load(trace))
    sampler = TelemetrySampler([], overrides=source)
    agent = EdgeAgent(edge, sampler=sampler, background=False)
    return agent, source, sampler


# -- the command line -----------------------------------------------------------------


def test_easy_prompt_under_neutral_telemetry_stays_local(
    broker: BrokerProcess, edge_env: dict[str, str], tmp_path: Path
) -> None:
    trace = write_trace(tmp_path / "neutral.jsonl", [{}])
    result = run(
        "edge-agent", "ask", "--json", "--dev", "--broker", broker.address,
        "--telemetry-trace", str(trace), EASY, env=edge_env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["source"] == "local"
    assert "Paris" in answer["text"]
    assert answer["confidence"] >= answer["threshold"]
    decision = answer["decision"]
    assert decision["path"] == "local"
    assert decision["broker"] is None
    assert decision["threshold_terms"] == []  # nothing in the trace moves τ
    assert "≥ τ" in decision["reason"]


def test_mode_cloud_escalates_to_the_broker_model(
    broker: BrokerProcess, edge_env: dict[str, str]
) -> None:
    result = run(
        "edge-agent", "ask", "--json", "--dev", "--broker", broker.address,
        "--mode", "cloud", "--max-tokens", "16", EASY, env=edge_env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["source"] == "cloud"
    assert answer["model"] == GEMMA
    assert answer["text"]
    decision = answer["decision"]
    assert decision["broker"]["model"] == GEMMA
    assert decision["broker"]["completion_tokens"] >= 1
    assert decision["timings"]["local_ms"] is None  # the local model never ran
    assert decision["reason"].startswith("mode cloud")


def test_cli_prints_the_answer_and_why(broker: BrokerProcess, edge_env: dict[str, str]) -> None:
    result = run(
        "edge-agent", "ask", "--dev", "--broker", broker.address, "--mode", "cloud",
        "--max-tokens", "8", EASY, env=edge_env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert f"cloud · {GEMMA}" in result.stderr
    assert "mode cloud always escalates" in result.stderr


def test_unreachable_broker_gives_a_degraded_local_answer(
    smollm2_path: Path, edge_env: dict[str, str]
) -> None:
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run(
        "edge-agent", "ask", "--json", "--dev", "--broker", f"127.0.0.1:{port}",
        "--mode", "cloud", "--max-tokens", "16", EASY, env=edge_env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["source"] == "local-degraded"
    assert answer["model"] == SMOLLM2
    assert "escalation failed" in answer["decision"]["reason"]
    assert answer["decision"]["timings"]["broker_ms"] < 3000


def test_dev_is_refused_for_a_remote_broker(edge_env: dict[str, str]) -> None:
    result = run("edge-agent", "ask", "--dev", "--broker", "10.1.2.3:50051", EASY, env=edge_env)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "loopback" in result.stderr


def test_budget_spent_keeps_answers_local_across_processes(
    broker: BrokerProcess, edge_env: dict[str, str]
) -> None:
    env = {**edge_env, "RIDGELINE_EDGE_BUDGET__REQUESTS_PER_HOUR": "1"}
    args = ["ask", "--json", "--dev", "--broker", broker.address, "--mode", "cloud",
            "--max-tokens", "8", EASY]  # fmt: skip
    first = json.loads(run("edge-agent", *args, env=env).stdout)
    assert first["source"] == "cloud"
    second = run("edge-agent", *args, env=env)
    assert second.returncode == 0, second.stderr
    answer = json.loads(second.stdout)
    assert answer["source"] == "local"
    assert "budget is spent" in answer["decision"]["reason"]
    assert answer["decision"]["telemetry"]["budget_left"] == 0.0
    assert answer["decision"]["broker"] is None


def test_telemetry_command_shows_snapshot_and_threshold(
    edge_env: dict[str, str], tmp_path: Path
) -> None:
    live = run("edge-agent", "telemetry", "--json", env=edge_env)
    assert live.returncode == 0, live.stderr
    data = json.loads(live.stdout)
    assert 0.0 <= data["threshold"] <= 1.0
    assert data["mode"] == "auto"
    low = write_trace(tmp_path / "low.jsonl", [{"battery_percent": 10, "power_plugged": False}])
    replayed = run("edge-agent", "telemetry", "--json", "--telemetry-trace", str(low), env=edge_env)
    assert replayed.returncode == 0, replayed.stderr
    data_low = json.loads(replayed.stdout)
    assert data_low["telemetry"] == {"battery_percent": 10, "power_plugged": False}
    assert [term["name"] for term in data_low["terms"]] == ["battery"]
    assert data_low["threshold"] > 0.8
    text = run("edge-agent", "telemetry", "--telemetry-trace", str(low), env=edge_env)
    assert "battery 10% unplugged" in text.stdout


# -- scenarios over traces (in-process agent, real model, real broker) ----------------

# Calibrated confidences of SmolLM2's answers to these (24 tokens): about 0.72 and 0.71.
# Above the neutral τ (0.55), below τ on a drained battery (0.79 and rising).
PROMPTS = ["What year did the Berlin wall fall?", "What is the largest planet in the solar system?"]


def _run_trace(agent: EdgeAgent, source: StepReplaySource, sampler: TelemetrySampler,
               prompts: list[str], steps: int) -> list[tuple[float, str]]:  # fmt: skip
    out = []
    for step in range(steps):
        if step:
            source.advance()
        sampler.refresh()
        answer = agent.ask(prompts[step % len(prompts)], max_tokens=24)
        out.append((answer.threshold, answer.source))
    return out


def test_battery_falling_unplugged_raises_tau_and_escalates_more(
    broker: BrokerProcess, model_store: ModelStore, tmp_path: Path
) -> None:
    levels = [80, 70, 60, 50, 40, 30, 20, 10, 10, 10, 10, 10]
    trace = write_trace(
        tmp_path / "battery.jsonl",
        [{"battery_percent": b, "power_plugged": False} for b in levels],
    )
    edge = settings(model_store, tmp_path, broker.address, preroute={"enabled": False})
    agent, source, sampler = replay_agent(edge, trace)
    with agent:
        steps = _run_trace(agent, source, sampler, PROMPTS, len(levels))
    taus = [tau for tau, _ in steps]
    assert taus == sorted(taus), taus  # τ only rises as the battery drains
    assert taus[-1] > taus[0] + 0.2
    first, last = steps[:4], steps[-4:]
    escalated = lambda part: sum(path != "local" for _, path in part)  # noqa: E731
    assert escalated(first) == 0, steps  # both prompts are answered locally at 80%
    assert escalated(last) == 4, steps


def test_rtt_rising_lowers_tau_and_escalates_less(
    broker: BrokerProcess, model_store: ModelStore, tmp_path: Path
) -> None:
    rtts = [0.0, 0.0, 0.3, 0.6, 1.0, 1.5, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    trace = write_trace(tmp_path / "rtt.jsonl", [{"broker_rtt_s": r} for r in rtts])
    # Doubtful answers (calibrated confidence about 0.41 and 0.28): below the neutral τ,
    # above τ on a 2 s link (about 0.2).
    hard = ["Is a tomato a fruit?", "What is the boiling point of water in Fahrenheit?"]
    edge = settings(model_store, tmp_path, broker.address, preroute={"enabled": False})
    agent, source, sampler = replay_agent(edge, trace)
    with agent:
        steps = _run_trace(agent, source, sampler, hard, len(rtts))
    taus = [tau for tau, _ in steps]
    assert taus == sorted(taus, reverse=True), taus
    assert taus[-1] < taus[0] - 0.2
    escalated = lambda part: sum(path != "local" for _, path in part)  # noqa: E731
    assert escalated(steps[:2]) == 2, steps  # low confidence, cheap link: escalate
    assert escalated(steps[-4:]) == 0, steps  # a 2 s link: the local answer will do


def test_noisy_telemetry_around_a_boundary_does_not_flap(
    smollm2_path: Path, model_store: ModelStore, tmp_path: Path
) -> None:
    import random

    rng = random.Random(7)
    # CPU load jitters around the level where τ crosses a fixed confidence.
    rows = [{"cpu_load": min(1.0, max(0.0, 0.85 + rng.uniform(-0.1, 0.1)))} for _ in range(60)]
    trace = write_trace(tmp_path / "noisy.jsonl", rows)
    edge = settings(model_store, tmp_path, "")
    agent, source, sampler = replay_agent(edge, trace)
    taus, raws = [], []
    with agent:
        for _ in rows:
            sampler.refresh()
            threshold = agent.decide_threshold()
            taus.append(threshold.value)
            raws.append(threshold.raw)
            source.advance()
    boundary = sorted(raws)[len(raws) // 2]  # a confidence right at the median raw τ

    def switches(series: list[float]) -> int:
        decisions = [boundary >= tau for tau in series]
        return sum(a != b for a, b in itertools.pairwise(decisions))

    assert switches(raws) >= 15  # unsmoothed, the decision would flip constantly
    assert switches(taus) <= 2


def test_broker_killed_mid_stream_gives_local_degraded_within_deadline(
    smollm2_path: Path, gemma_path: Path, model_store: ModelStore, tmp_path: Path
) -> None:
    process = gemma_broker(model_store, tmp_path)
    # τ 1.0 and no early abort: the local answer is finished first, then escalated.
    edge = settings(
        model_store, tmp_path, process.address,
        generation={"max_tokens": 200}, abort={"enabled": False},
    )  # fmt: skip
    resets: list[str] = []
    streamed: list[str] = []

    def on_text(text: str) -> None:
        streamed.append(text)
        if len(streamed) == 2:  # the broker is mid-answer
            process.kill()

    deadline_s = 20.0
    try:
        with EdgeAgent(edge, background=False) as agent:
            answer = agent.ask(
                "Tell me a long story about a dragon and a knight.",
                threshold=1.0,
                deadline_s=deadline_s,
                on_text=on_text,
                on_reset=resets.append,
            )
    finally:
        process.kill()
    assert answer.source == "local-degraded"
    assert answer.model == SMOLLM2
    assert answer.text
    assert len(streamed) >= 2 and resets and "mid-answer" in resets[0]
    decision = answer.decision
    broker = decision.broker
    assert broker is not None and broker.error and broker.attempts == 1  # never retried
    timings = decision.timings
    assert timings.broker_ms is not None and timings.local_ms is not None
    assert timings.broker_ms < deadline_s * 1000
    # The finished local draft is the answer: no second local run after the failure.
    # (local_ms is the load, the generation and the confidence probes.)
    assert answer.timings is not None
    info = decision.confidence_info
    assert info is not None
    generation_ms = (answer.timings.total_s + answer.timings.load_s) * 1000
    assert timings.local_ms < generation_ms + (info.probes_ms or 0.0) + 50


def test_dead_broker_opens_the_circuit_and_later_requests_wait_for_nothing(
    smollm2_path: Path, model_store: ModelStore, tmp_path: Path
) -> None:
    # A server that accepts connections and never says a word: TCP connects, gRPC never
    # hears back. Without a circuit every request would wait out its connect timeout.
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(16)
        held: list[socket.socket] = []
        stop = threading.Event()

        def accept() -> None:
            blackhole.settimeout(0.1)
            while not stop.is_set():
                try:
                    held.append(blackhole.accept()[0])
                except TimeoutError:
                    continue
                except OSError:  # the listening socket was closed
                    return

        acceptor = threading.Thread(target=accept, daemon=True)
        acceptor.start()
        address = f"127.0.0.1:{blackhole.getsockname()[1]}"
        edge = settings(
            model_store, tmp_path, address,
            generation={"max_tokens": 8},
            escalation={"connect_timeout_s": 0.5, "failure_threshold": 3, "reset_after_s": 600,
                        "reset_max_s": 600},
        )  # fmt: skip
        try:
            with EdgeAgent(edge, background=False) as agent:
                first = [agent.ask(EASY, mode="cloud") for _ in range(3)]
                after = [agent.ask(EASY, mode="cloud") for _ in range(10)]
        finally:
            stop.set()
            acceptor.join()
            for connection in held:
                connection.close()
    for answer in first:
        assert answer.source == "local-degraded"
        assert answer.decision.timings.broker_ms is not None
        assert answer.decision.timings.broker_ms >= 400  # each one waited for the connection
    for answer in after:
        assert answer.source == "local-degraded"
        assert answer.decision.timings.broker_ms is None  # no call went out
        assert "circuit open" in answer.decision.reason
        assert answer.decision.telemetry["broker_available"] is False


def test_restarted_broker_closes_the_circuit_again(
    smollm2_path: Path, gemma_path: Path, model_store: ModelStore, tmp_path: Path
) -> None:
    process = gemma_broker(model_store, tmp_path)
    address = process.address
    process.kill()
    edge = settings(
        model_store, tmp_path, address,
        generation={"max_tokens": 8},
        escalation={"failure_threshold": 2, "reset_after_s": 0.5, "reset_max_s": 1.0},
    )  # fmt: skip
    with EdgeAgent(edge, background=True) as agent:
        down = [agent.ask(EASY, mode="cloud") for _ in range(3)]
        assert [a.source for a in down] == ["local-degraded"] * 3
        escalator = agent.broker()
        assert escalator is not None and escalator.circuit.state != "closed"
        restarted = gemma_broker(model_store, tmp_path, listen=address)
        try:
            deadline = time.monotonic() + 30
            while escalator.circuit.state != "closed":  # the background probe finds it
                assert time.monotonic() < deadline, "circuit never closed"
                time.sleep(0.1)
            answer = agent.ask(EASY, mode="cloud")
        finally:
            restarted.stop()
    assert answer.source == "cloud"
    assert answer.model == GEMMA
    assert answer.decision.telemetry["broker_available"] is True


def test_early_abort_escalates_a_bad_answer_and_saves_time(
    broker: BrokerProcess, model_store: ModelStore, tmp_path: Path
) -> None:
    edge = settings(model_store, tmp_path, broker.address, generation={"max_tokens": 128})
    with EdgeAgent(edge, background=False) as agent:
        full = agent.ask(BAD, mode="local")  # what finishing the bad answer looks like
        answer = agent.ask(BAD, max_tokens=128)
    # The finished local answer is bad: the same phrase over and over.
    phrases = re.findall(r"thread of life", full.text, flags=re.IGNORECASE)
    assert len(phrases) >= 3, full.text
    assert full.decision.aborted is None
    assert answer.source == "cloud"
    aborted = answer.decision.aborted
    assert aborted is not None
    assert aborted.at_token == edge.abort.min_tokens
    assert aborted.running_confidence < aborted.limit
    assert "early abort" in answer.decision.reason
    local_ms = answer.decision.timings.local_ms
    assert full.decision.timings.local_ms is not None and local_ms is not None
    assert local_ms < 0.5 * full.decision.timings.local_ms


def test_preroute_skips_local_for_arithmetic(
    broker: BrokerProcess, model_store: ModelStore, tmp_path: Path
) -> None:
    edge = settings(model_store, tmp_path, broker.address, generation={"max_tokens": 16})
    with EdgeAgent(edge, background=False) as agent:
        answer = agent.ask("What is 17 times 23?")
    assert answer.source == "skipped-local"
    assert answer.model == GEMMA
    assert answer.confidence is None
    preroute = answer.decision.preroute
    assert preroute is not None and preroute.skipped_local and "arithmetic" in preroute.hints
    assert answer.decision.timings.local_ms is None


# -- simulate ------------------------------------------------------------------------


def test_simulate_writes_a_table_csv_and_plot(
    smollm2_path: Path, edge_env: dict[str, str], tmp_path: Path
) -> None:
    rows = [{"battery_percent": b, "power_plugged": False} for b in (80, 80, 5, 5, 5, 5)]
    rows[-1]["broker_available"] = False
    trace = write_trace(tmp_path / "trace.jsonl", rows)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"# a comment\n{EASY}\n\nWhat is 17 times 23?\n")
    out = tmp_path / "sim"
    result = run(
        "edge-agent", "simulate", "--trace", str(trace), "--prompts", str(prompts),
        "--out", str(out), "--max-tokens", "8", env=edge_env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "skipped-local" in result.stdout and "What is 17 times 23?" in result.stdout
    import csv

    with (out / "simulation.csv").open() as handle:
        steps = list(csv.DictReader(handle))
    assert [float(step["t"]) for step in steps] == [0, 1, 2, 3, 4, 5]
    assert steps[0]["path"] == "local"  # the easy prompt, full battery
    assert steps[1]["path"] == "skipped-local"  # arithmetic
    taus = [float(step["threshold"]) for step in steps]
    assert taus[-1] > taus[0]  # the battery ran down
    assert steps[-1]["path"] in ("local", "local-degraded")  # the broker is down: no cloud
    assert "unavailable" in steps[-1]["reason"] or steps[-1]["path"] == "local"
    assert (out / "simulation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_rejects_a_bad_trace_in_one_line(edge_env: dict[str, str], tmp_path: Path) -> None:
    trace = tmp_path / "bad.jsonl"
    trace.write_text('{"t": 0, "battery_percent": 50}\n{"t": 1, "batery": 3}\n')
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello\n")
    result = run(
        "edge-agent", "simulate", "--trace", str(trace), "--prompts", str(prompts),
        "--out", str(tmp_path / "sim"), env=edge_env,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{trace}:2" in result.stderr


def test_without_a_prober_a_request_is_the_half_open_trial(
    smollm2_path: Path, gemma_path: Path, model_store: ModelStore, tmp_path: Path
) -> None:
    # A library user without background threads: no probe ever runs, so the request
    # after the reset wait must be the one that finds the broker back.
    process = gemma_broker(model_store, tmp_path)
    address = process.address
    process.kill()
    edge = settings(
        model_store, tmp_path, address,
        generation={"max_tokens": 8},
        escalation={"failure_threshold": 2, "reset_after_s": 2.0, "reset_max_s": 2.0},
    )  # fmt: skip
    with EdgeAgent(edge, background=False) as agent:
        down = [agent.ask(EASY, mode="cloud") for _ in range(2)]
        assert [a.source for a in down] == ["local-degraded"] * 2
        link = agent.broker()
        assert link is not None and link.circuit.state in ("open", "half-open")
        restarted = gemma_broker(model_store, tmp_path, listen=address)
        try:
            time.sleep(5.5)  # past the reset wait and the channel's reconnect backoff
            answer = agent.ask(EASY, mode="cloud")
        finally:
            restarted.stop()
    assert answer.source == "cloud", answer.decision.reason
    broker = agent.broker()
    assert broker is not None and broker.circuit.state == "closed"


def test_bad_request_options_are_refused_before_any_work(
    model_store: ModelStore, tmp_path: Path
) -> None:
    from ridgeline_core.errors import InvalidRequestError

    edge = settings(model_store, tmp_path, "")
    with EdgeAgent(edge, background=False) as agent:
        for options in ({"threshold": 1.5}, {"deadline_s": 0.0}, {"mode": "sometimes"}):
            with pytest.raises(InvalidRequestError):
                agent.ask(EASY, **options)
