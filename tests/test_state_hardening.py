"""Issue 16: the edge's own state and its broker link under abuse.

- a caller's deadline (too short, too long) never counts as a broker outage: the shared
  circuit and the broker's health stay as they were, and the request answers
  ``local-degraded`` saying its deadline ran out;
- a corrupt escalation budget file (non-finite or future timestamps) and corrupt answer
  cache metadata are set aside with one warning; the commands keep working;
- one invalid manifest in ``models.manifest_dirs`` is skipped, not fatal.

The link rules run in-process over a scripted model (fast lane); the deadline cases also
run against a real broker process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sqlite3
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from brokerproc import BrokerProcess
from clirun import run
from fastlane import EASY, SCRIPTED, fast_agent, fast_settings
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.daemon import bodies, openai_api
from edge_agent.daemon.grpc_api import options_of
from edge_agent.link.escalation import Escalator
from edge_agent.settings import EscalationSettings
from edge_agent.telemetry.meters import BrokerHealth
from ridgeline.v1 import broker_pb2, edge_pb2
from ridgeline_core import errors
from ridgeline_core.client import MAX_TIMEOUT_S, AnswerStream, BrokerClient
from ridgeline_core.runtime import ChatMessage, SamplingParams

MESSAGES = [ChatMessage("user", "Say hi.")]


# -- deadlines: a slow broker in-process ------------------------------------------------------


class _Cancellable(Iterator[broker_pb2.GenerateResponse]):
    def __init__(self, events: Iterator[broker_pb2.GenerateResponse]) -> None:
        self._events = events

    def __next__(self) -> broker_pb2.GenerateResponse:
        return next(self._events)

    def cancel(self) -> None:
        pass


class SlowBroker:
    """A broker client whose every answer takes ``answer_s``: a call whose timeout is
    shorter ends DEADLINE_EXCEEDED when the timeout passes, as gRPC's would."""

    def __init__(self, answer_s: float) -> None:
        self.answer_s = answer_s
        self.timeouts: list[float] = []

    def wait_ready(self, timeout_s: float) -> None:
        pass

    def stream(self, *_: Any, timeout_s: float | None = None, **__: Any) -> AnswerStream:
        assert timeout_s is not None
        self.timeouts.append(timeout_s)
        return AnswerStream(_Cancellable(self._events(timeout_s)))  # type: ignore[arg-type]

    def _events(self, timeout_s: float) -> Iterator[broker_pb2.GenerateResponse]:
        time.sleep(min(timeout_s, self.answer_s))
        if timeout_s < self.answer_s:
            late = errors.UnavailableError("Deadline Exceeded")
            late.status = "DEADLINE_EXCEEDED"
            raise late
        yield broker_pb2.GenerateResponse(delta=broker_pb2.TextDelta(text="Hi!", model="big"))
        usage = broker_pb2.Usage(prompt_tokens=3, completion_tokens=2)
        end = broker_pb2.GenerateResult(
            finish_reason=broker_pb2.FINISH_REASON_STOP, answer_model="big", usage=usage
        )
        yield broker_pb2.GenerateResponse(result=end)

    def health(self, *, timeout_s: float) -> bool:
        return True

    def close(self) -> None:
        pass


def slow_link(answer_s: float, deadline_s: float = 0.5) -> tuple[Escalator, BrokerHealth]:
    health = BrokerHealth(alpha=0.5)
    config = EscalationSettings(deadline_s=deadline_s, failure_threshold=2, retries=1)
    link = Escalator(SlowBroker(answer_s), config, health, address="slow:1")  # type: ignore[arg-type]
    return link, health


def test_a_callers_short_deadline_is_not_a_broker_outage(tmp_path: Path) -> None:
    link, health = slow_link(answer_s=0.2)
    with fast_agent(tmp_path, link) as agent:  # type: ignore[arg-type]
        for _ in range(4):  # more than failure_threshold
            answer = agent.ask(EASY, mode="cloud", deadline_s=0.05)
            assert answer.source == "local-degraded"
            assert answer.model == SCRIPTED
            assert "deadline_s 0.05 s ran out" in answer.decision.reason
            broker = answer.decision.broker
            assert broker is not None and broker.circuit == "closed"
        assert link.circuit.state == "closed"
        assert health.read()["broker_available"] is None  # neither up nor down: no news
        answer = agent.ask(EASY, mode="cloud")
    assert (answer.source, answer.text) == ("cloud", "Hi!")


def test_a_broker_slower_than_the_configured_deadline_still_counts(tmp_path: Path) -> None:
    link, health = slow_link(answer_s=0.3, deadline_s=0.1)
    escalation = {"deadline_s": 0.1}
    with fast_agent(tmp_path, link, escalation=escalation) as agent:  # type: ignore[arg-type]
        for _ in range(2):  # failure_threshold
            answer = agent.ask(EASY, mode="cloud")  # the configured deadline
            assert answer.source == "local-degraded"
            assert "Deadline Exceeded" in answer.decision.reason
        assert link.circuit.state == "open"
        assert health.read()["broker_available"] is False


def test_a_longer_deadline_than_configured_that_passes_still_counts() -> None:
    link, _ = slow_link(answer_s=0.3, deadline_s=0.05)
    for _ in range(2):
        with pytest.raises(Exception) as caught:
            link.escalate(MESSAGES, SamplingParams(max_tokens=4), draft=None, deadline_s=0.1)
        assert getattr(caught.value, "outage", None) is True
    assert link.circuit.state == "open"


def test_a_callers_deadline_releases_a_half_open_trial() -> None:
    now = [0.0]
    link, _ = slow_link(answer_s=0.2)
    from edge_agent.link.circuit import CircuitBreaker

    link.circuit = CircuitBreaker(1, 10.0, 60.0, clock=lambda: now[0])
    link.circuit.allow()
    link.circuit.record_failure("refused")
    now[0] += 10.0
    assert link.circuit.state == "half-open"
    with pytest.raises(Exception) as caught:
        link.escalate(MESSAGES, SamplingParams(max_tokens=4), draft=None, deadline_s=0.05)
    assert getattr(caught.value, "outage", None) is False
    assert link.circuit.state == "half-open"
    assert link.circuit.retry_in_s() == 0.0  # not doubled: the trial was given back
    assert link.escalate(MESSAGES, SamplingParams(max_tokens=4), draft=None, deadline_s=1).text
    assert link.circuit.state == "closed"


@pytest.mark.parametrize("deadline_s", [1e10, math.inf, 3600.5, 0.0, -1.0, math.nan])
def test_an_out_of_range_deadline_is_refused_before_any_call(
    tmp_path: Path, deadline_s: float
) -> None:
    link, _ = slow_link(answer_s=0.0)
    with (
        fast_agent(tmp_path, link) as agent,  # type: ignore[arg-type]
        pytest.raises(errors.InvalidRequestError, match="deadline_s"),
    ):
        agent.ask(EASY, mode="cloud", deadline_s=deadline_s)
    assert link.circuit.state == "closed"
    assert not link.client.timeouts  # type: ignore[attr-defined]


@pytest.mark.parametrize("huge", [1e10, math.inf])
def test_every_entry_point_refuses_a_huge_deadline(huge: float, edge_env: dict[str, str]) -> None:
    chat = {"messages": [{"role": "user", "content": "hi"}], "ridgeline": {"deadline_s": huge}}
    classify = {"specialist": "intents", "text": "hi", "deadline_s": huge}
    entries = [
        lambda: openai_api.parse_chat(chat, {}, {"smol": "chat"}),
        lambda: bodies.parse_body(bodies.ClassifyBody, classify).options(),
        lambda: options_of(edge_pb2.AskRequest(deadline_s=huge)),
    ]
    for entry in entries:
        with pytest.raises(errors.InvalidRequestError, match="deadline_s") as refused:
            entry()
        assert (refused.value.param or "").endswith("deadline_s")
    result = run("edge-agent", "ask", "--deadline", f"{huge}", "hi", env=edge_env)
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith("error: deadline_s must be")
    assert "Traceback" not in result.stderr


def test_a_huge_deadline_given_to_the_link_itself_is_bounded() -> None:
    """The link is public: a library caller passing 1e10 gets an answer, not a call that
    gRPC ends at once (its deadline overflows) and that counts as an outage."""
    link, _ = slow_link(answer_s=0.0)
    answer = link.escalate(MESSAGES, SamplingParams(max_tokens=4), draft=None, deadline_s=1e10)
    assert answer.text == "Hi!"
    assert max(link.client.timeouts) <= MAX_TIMEOUT_S  # type: ignore[attr-defined]


# -- deadlines: a real broker ------------------------------------------------------------------


@pytest.mark.model
def test_deadline_abuse_leaves_the_shared_circuit_closed(
    shared_broker: BrokerProcess, tmp_path: Path
) -> None:
    broker = {"address": shared_broker.address, "plaintext": True}
    with fast_agent(tmp_path, None, broker=broker) as agent:
        for _ in range(4):  # more than escalation.failure_threshold (3)
            answer = agent.ask(EASY, mode="cloud", deadline_s=0.05, max_tokens=64)
            assert answer.source == "local-degraded"
            assert "deadline_s 0.05 s ran out" in answer.decision.reason
        for huge in (1e10, math.inf):
            with pytest.raises(errors.InvalidRequestError, match="deadline_s"):
                agent.ask(EASY, mode="cloud", deadline_s=huge)
        link = agent.parts.link.link()
        assert link is not None and link.circuit.state == "closed"
        assert agent.parts.broker_health.read()["broker_available"] is not False
        answer = agent.ask(EASY, mode="cloud", max_tokens=8, deadline_s=3600)
        assert answer.source == "cloud", answer.decision.reason
        assert link.circuit.state == "closed"

    # The shared core client bounds a timeout gRPC cannot represent.
    client = BrokerClient(shared_broker.address, plaintext=True)
    try:
        client.wait_ready(10)
        events = list(client.stream(MESSAGES, SamplingParams(max_tokens=4), timeout_s=1e10))
        assert events and events[-1].finish_reason
    finally:
        client.close()


# -- state files through the command line ------------------------------------------------------


def scripted_cli_env(root: Path, **settings: str) -> dict[str, str]:
    """The environment of an in-process ``edge-agent`` over the scripted model, all state
    under ``root``; ``settings``: more RIDGELINE_EDGE_* variables (without the prefix)."""
    fast = fast_settings(root)
    fast.models.store().pull(fast.models.catalog().get(SCRIPTED))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIDGELINE_")}
    env.update(
        HOME=str(root / "home"),
        XDG_CONFIG_HOME=str(root / "config"),
        XDG_CACHE_HOME=str(root / "cache"),
        XDG_STATE_HOME=str(root / "state"),
        RIDGELINE_EDGE_MODELS__STORE_DIR=str(root / "store"),
        RIDGELINE_EDGE_MODELS__MANIFEST_DIRS=json.dumps([str(root / "manifests")]),
        RIDGELINE_EDGE_MODELS__DEFAULT=SCRIPTED,
        RIDGELINE_EDGE_TELEMETRY__SOURCES="[]",
        RIDGELINE_EDGE_BUDGET__STATE_FILE=str(root / "budget.json"),
        RIDGELINE_EDGE_BUDGET__REQUESTS_PER_HOUR="5",
    )
    env.update({f"RIDGELINE_EDGE_{key.upper()}": value for key, value in settings.items()})
    return env


def assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr


def budget_left(env: dict[str, str]) -> float:
    shown = run("edge-agent", "telemetry", "--json", env=env)
    assert_clean(shown)
    left: float = json.loads(shown.stdout)["telemetry"]["budget_left"]
    return left


def test_non_finite_budget_entries_are_dropped_and_ask_answers(tmp_path: Path) -> None:
    env = scripted_cli_env(tmp_path)
    state = tmp_path / "budget.json"
    now = time.time()
    bad = [[math.inf, 3], [now, math.inf], [math.nan, 1], [-math.inf, 2]]
    state.write_text(json.dumps({"escalations": [*bad, [now - 10, 5]]}))  # Infinity, NaN
    asked = run("edge-agent", "ask", "--json", EASY, env=env)
    assert_clean(asked)
    assert json.loads(asked.stdout)["source"] == "local"
    assert "dropped 4 invalid entries" in asked.stderr and str(state) in asked.stderr
    assert json.loads(state.read_text()) == {"escalations": [[now - 10, 5]]}
    shown = run("edge-agent", "telemetry", "--json", env=env)
    assert_clean(shown)
    assert "WARNING" not in shown.stderr  # repaired once, for every process
    assert json.loads(shown.stdout)["telemetry"]["budget_left"] == pytest.approx(0.8)


def test_budget_entries_from_the_future_count_from_now(tmp_path: Path) -> None:
    env = scripted_cli_env(tmp_path)
    state = tmp_path / "budget.json"
    later = time.time() + 30 * 86400  # the clock was set back a month
    state.write_text(json.dumps({"escalations": [[later, 1]] * 5}))
    assert budget_left(env) == 0.0  # spent now: the escalations happened
    times = [at for at, _ in json.loads(state.read_text())["escalations"]]
    assert all(at <= time.time() for at in times)  # so they age out within the hour
    state.write_text(json.dumps({"escalations": [[at - 3601, 1] for at in times]}))
    assert budget_left(env) == 1.0


def test_a_budget_file_that_is_not_json_is_moved_aside(tmp_path: Path) -> None:
    env = scripted_cli_env(tmp_path)
    (tmp_path / "budget.json").write_text("{torn")
    asked = run("edge-agent", "ask", "--json", EASY, env=env)
    assert_clean(asked)
    assert "moved it to budget.json.corrupt-" in asked.stderr
    assert [p.read_text() for p in tmp_path.glob("budget.json.corrupt-*")] == ["{torn"]


_JSON_NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
_JSON = st.recursive(
    st.none() | st.booleans() | _JSON_NUMBERS | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_ENTRY = st.one_of(st.lists(_JSON_NUMBERS, min_size=2, max_size=2), _JSON)


@given(
    content=st.one_of(
        st.builds(lambda entries: {"escalations": entries}, st.lists(_ENTRY, max_size=6)),
        _JSON,
    )
)
def test_any_corrupt_budget_file_leaves_a_working_command(
    content: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("budget")
    env = scripted_cli_env(root)
    state = root / "budget.json"
    state.write_text(json.dumps(content))  # NaN and Infinity as Python's json writes them
    left = budget_left(env)
    assert 0.0 <= left <= 1.0
    again = run("edge-agent", "telemetry", "--json", env=env)
    assert_clean(again)
    assert "WARNING" not in again.stderr  # the first run repaired or moved the file


# -- the answer cache's metadata -----------------------------------------------------------------


def _cache_edit(path: Path, *statements: str) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        for statement in statements:
            conn.execute(statement)
        conn.commit()


@pytest.mark.parametrize(
    "damage",
    [
        "INSERT OR REPLACE INTO meta VALUES ('dim', 'three')",
        "INSERT OR REPLACE INTO meta VALUES ('dim', '0')",
        "INSERT OR REPLACE INTO meta VALUES ('generation', 'soon')",
    ],
)
def test_cache_stats_reports_a_cache_with_corrupt_metadata(tmp_path: Path, damage: str) -> None:
    cache_file = tmp_path / "answers.sqlite"
    env = scripted_cli_env(tmp_path, CACHE__ENABLED="true", CACHE__PATH=str(cache_file))
    assert_clean(run("edge-agent", "cache", "stats", "--json", env=env))  # creates the file
    _cache_edit(cache_file, damage)
    shown = run("edge-agent", "cache", "stats", "--json", env=env)
    assert_clean(shown)
    assert json.loads(shown.stdout)["entries"] == 0
    assert (
        shown.stderr.count("WARNING") == 1 and "moved it to answers.sqlite.corrupt-" in shown.stderr
    )
    again = run("edge-agent", "cache", "stats", "--json", env=env)
    assert_clean(again)
    assert again.stderr == ""
    cleared = run("edge-agent", "cache", "clear", env=env)
    assert_clean(cleared)
    assert "removed 0" in cleared.stdout


def test_corrupt_cache_metadata_warns_once_and_the_cache_works_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = {"enabled": True, "store": "all", "path": str(tmp_path / "answers.sqlite")}
    with fast_agent(tmp_path, None, cache=cache) as agent:
        assert agent.ask(EASY, threshold=0.5).source == "local"  # stored
    _cache_edit(tmp_path / "answers.sqlite", "UPDATE meta SET value = 'x' WHERE key = 'dim'")
    with (
        caplog.at_level(logging.WARNING, logger="edge_agent"),
        fast_agent(tmp_path, None, cache=cache) as agent,
    ):
        sources = [agent.ask(EASY, threshold=0.5).source for _ in range(3)]
    assert sources == ["local", "cache", "cache"]  # a fresh cache, used at once
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "unreadable" in warnings[0].getMessage()


def test_a_symlinked_cache_path_never_changes_its_target(tmp_path: Path) -> None:
    target = tmp_path / "shared-notes.txt"
    target.write_text("someone's notes")
    target.chmod(0o644)
    link = tmp_path / "cache" / "answers.sqlite"
    link.parent.mkdir(mode=0o700)
    link.symlink_to(target)
    env = scripted_cli_env(tmp_path, CACHE__ENABLED="true", CACHE__PATH=str(link))
    shown = run("edge-agent", "cache", "stats", "--json", env=env)
    assert_clean(shown)
    assert "symbolic link" in shown.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert target.read_text() == "someone's notes"
    assert not link.is_symlink()
    (aside,) = link.parent.glob("answers.sqlite.corrupt-*")
    assert aside.is_symlink()


_META_VALUES = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),  # what SQLite stores
    st.floats(allow_nan=False),
    st.binary(max_size=8),
)


class _Words:
    name, dimensions = "words", 16

    def __call__(self, text: str) -> Any:
        import numpy as np

        vector = np.zeros(self.dimensions, dtype=np.float32)
        for word in text.lower().split():
            vector[sum(word.encode()) % self.dimensions] += 1
        return vector if vector.any() else vector + 1


@given(
    column=st.sampled_from(
        ["meta:dim", "meta:generation", "meta:encoder", "entries:created", "entries:used",
         "entries:vector", "entries:answer", "entries:prompt"]
    ),
    value=_META_VALUES,
)  # fmt: skip
def test_any_corrupt_cache_value_leaves_a_working_cache(
    column: str, value: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from edge_agent.knowledge.cache import SemanticCache

    path = tmp_path_factory.mktemp("cache") / "answers.sqlite"
    embed = _Words()
    with SemanticCache(path, embed, encoder="words/test") as cache:
        cache.put("the capital of France", "s", {"text": "Paris"})
        cache.put("the height of Everest", "s", {"text": "8849 m"})
    table, key = column.split(":")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        if table == "meta":
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
        else:
            conn.execute(f"UPDATE entries SET {key} = ? WHERE id = 1", (value,))
        conn.commit()
    with SemanticCache(path, embed, encoder="words/test") as cache:
        for _ in range(2):
            cache.lookup("the capital of France", "s")
            cache.lookup("the height of Everest", "s")
        assert cache.put("the capital of France", "s", {"text": "Paris"})
        hit = cache.lookup("the capital of France", "s")
        assert hit is not None and hit.answer == {"text": "Paris"}
        assert cache.stats()["entries"] >= 1


# -- an invalid manifest among models.manifest_dirs -------------------------------------------


def test_one_invalid_manifest_does_not_stop_the_other_models(tmp_path: Path) -> None:
    env = scripted_cli_env(tmp_path)
    bad = tmp_path / "manifests" / "half-written.toml"
    bad.write_text('name = "half-written"\nruntime = "scripted"\n', encoding="utf-8")
    asked = run("edge-agent", "ask", "--json", EASY, env=env)
    assert_clean(asked)
    assert json.loads(asked.stdout)["model"] == SCRIPTED
    assert str(bad) in asked.stderr and "invalid" in asked.stderr
    listed = run("edge-agent", "models", "list", "--json", env=env)
    assert_clean(listed)
    names = [row["name"] for row in json.loads(listed.stdout)["models"]]
    assert SCRIPTED in names and "smollm2-135m-instruct" in names
    refused = run("edge-agent", "ask", "--model", "half-written", EASY, env=env)
    assert refused.returncode == 4, refused.stderr
    assert "model 'half-written' cannot be used" in refused.stderr and str(bad) in refused.stderr
    assert "Traceback" not in refused.stderr


# -- all of it at once, for the daemon ---------------------------------------------------------


def test_serve_starts_and_answers_over_damaged_state(tmp_path: Path) -> None:
    """A budget file with Infinity in it, cache metadata it did not write and an invalid
    manifest: ``serve`` warns about each and answers (it used to exit 70 or 4)."""
    from daemonproc import DaemonProcess

    cache_file = tmp_path / "answers.sqlite"
    env = scripted_cli_env(tmp_path, CACHE__ENABLED="true", CACHE__PATH=str(cache_file))
    assert_clean(run("edge-agent", "cache", "stats", env=env))
    _cache_edit(cache_file, "INSERT OR REPLACE INTO meta VALUES ('dim', 'three')")
    (tmp_path / "budget.json").write_text('{"escalations": [[Infinity, Infinity]]}')
    (tmp_path / "manifests" / "bad.toml").write_text('name = "bad"\n', encoding="utf-8")
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        env.pop(key, None)
    daemon = DaemonProcess(env, tmp_path)
    try:
        body = {"messages": [{"role": "user", "content": EASY}], "max_tokens": 16}
        for _ in range(2):
            status, _, answer = daemon.post("/v1/chat/completions", body)
            assert status == 200, answer
            assert "Paris" in answer["choices"][0]["message"]["content"]
    finally:
        assert daemon.stop() == 0
    stderr = daemon.stderr()
    assert "Traceback" not in stderr and "internal error" not in stderr
    assert "dropped 1 invalid entries" in stderr
    assert stderr.count("moved it to answers.sqlite.corrupt-") == 1
    assert "bad.toml" in stderr
