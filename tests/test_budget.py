"""The escalation budget: hourly and daily limits, sliding windows, a shared state file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge_agent.routing.budget import DAY_S, HOUR_S, EscalationBudget
from edge_agent.settings import BudgetSettings
from ridgeline_core.errors import ConfigError

T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    return tmp_path / "state" / "budget.json"


def budget(path: Path | None, clock: FakeClock, **limits: Any) -> EscalationBudget:
    return EscalationBudget(BudgetSettings(**limits), path, clock=clock)


def stored(path: Path) -> list[list[float]]:
    data: dict[str, list[list[float]]] = json.loads(path.read_text())
    return data["escalations"]


def test_no_limits(state_file: Path, clock: FakeClock) -> None:
    unlimited = budget(state_file, clock)
    assert not unlimited.limited
    assert unlimited.left() is None
    unlimited.record(1000)
    assert not state_file.exists()
    assert not state_file.parent.exists()
    assert unlimited.left() is None
    assert unlimited.read() == {"budget_left": None}


def test_requests_per_hour(state_file: Path, clock: FakeClock) -> None:
    limited = budget(state_file, clock, requests_per_hour=2)
    assert limited.limited
    assert limited.left() == 1.0
    limited.record(10)
    assert limited.left() == 0.5
    limited.record(10)
    assert limited.left() == 0.0
    limited.record(10)  # spending past the limit stays at zero, never negative
    assert limited.left() == 0.0
    assert limited.read() == {"budget_left": 0.0}


def test_hour_window_slides_but_the_day_remembers(state_file: Path, clock: FakeClock) -> None:
    limited = budget(state_file, clock, requests_per_hour=2, requests_per_day=4)
    limited.record(1)
    limited.record(1)
    assert limited.left() == 0.0  # the hourly limit is the tightest
    clock.advance(HOUR_S - 1)
    assert limited.left() == 0.0
    clock.advance(2)
    assert limited.left() == 0.5  # hour: 2 of 2 left, day: 2 of 4 left
    limited.record(1)
    assert limited.left() == 0.25  # day: 1 of 4 left
    clock.advance(DAY_S)
    assert limited.left() == 1.0


def test_tokens_per_day(state_file: Path, clock: FakeClock) -> None:
    limited = budget(state_file, clock, tokens_per_day=1000)
    limited.record(250)
    assert limited.left() == 0.75
    clock.advance(12 * HOUR_S)
    limited.record(500)
    assert limited.left() == 0.25
    limited.record(400)
    assert limited.left() == 0.0
    clock.advance(12 * HOUR_S + 1)  # the first 250 fall out of the day
    assert limited.left() == pytest.approx(0.1)  # 900 of 1000 still count
    clock.advance(12 * HOUR_S)
    assert limited.left() == 1.0


def test_tokens_per_hour_and_negative_token_counts(state_file: Path, clock: FakeClock) -> None:
    limited = budget(state_file, clock, tokens_per_hour=100)
    limited.record(-50)  # a nonsense count spends nothing
    assert limited.left() == 1.0
    limited.record(40)
    assert limited.left() == pytest.approx(0.6)


@pytest.mark.parametrize(
    "limit", ["requests_per_hour", "requests_per_day", "tokens_per_hour", "tokens_per_day"]
)
def test_zero_limit_is_spent_at_once(state_file: Path, clock: FakeClock, limit: str) -> None:
    limited = budget(state_file, clock, **{limit: 0})
    assert limited.left() == 0.0
    assert limited.read() == {"budget_left": 0.0}


def test_tightest_limit_wins(state_file: Path, clock: FakeClock) -> None:
    limited = budget(state_file, clock, requests_per_day=10, tokens_per_hour=1000)
    limited.record(800)
    assert limited.left() == pytest.approx(0.2)  # tokens: 0.2, requests: 0.9


def test_spending_persists_across_instances(state_file: Path, clock: FakeClock) -> None:
    first = budget(state_file, clock, requests_per_hour=4)
    first.record(10)
    first.record(20)
    assert state_file.exists()
    assert [tokens for _, tokens in stored(state_file)] == [10, 20]

    second = budget(state_file, clock, requests_per_hour=4)
    assert second.left() == 0.5
    second.record(30)
    assert second.left() == 0.25
    assert [tokens for _, tokens in stored(state_file)] == [10, 20, 30]

    third = budget(state_file, clock, requests_per_hour=4)
    assert third.left() == 0.25


def test_record_merges_what_other_processes_wrote(state_file: Path, clock: FakeClock) -> None:
    first = budget(state_file, clock, requests_per_hour=4)
    second = budget(state_file, clock, requests_per_hour=4)
    first.record(1)
    second.record(1)  # reads the file first, so the first record is kept
    assert len(stored(state_file)) == 2
    assert second.left() == 0.5


def test_corrupt_file_names_the_file(state_file: Path, clock: FakeClock) -> None:
    state_file.parent.mkdir(parents=True)
    state_file.write_text("{not json")
    with pytest.raises(ConfigError, match=r"budget\.json") as caught:
        budget(state_file, clock, requests_per_hour=2)
    assert str(state_file) in str(caught.value)
    assert "remove it to reset" in str(caught.value)


@pytest.mark.parametrize(
    "content",
    ['{"spent": []}', '{"escalations": [[1, 2, 3]]}', '{"escalations": [["x", 1]]}', "[]"],
)
def test_malformed_file_is_a_config_error(state_file: Path, clock: FakeClock, content: str) -> None:
    state_file.parent.mkdir(parents=True)
    state_file.write_text(content)
    with pytest.raises(ConfigError, match="unreadable"):
        budget(state_file, clock, requests_per_hour=2)


def test_corrupt_file_is_ignored_without_limits(state_file: Path, clock: FakeClock) -> None:
    state_file.parent.mkdir(parents=True)
    state_file.write_text("{not json")
    assert budget(state_file, clock).left() is None


def test_entries_older_than_a_day_are_dropped_on_write(state_file: Path, clock: FakeClock) -> None:
    state_file.parent.mkdir(parents=True)
    old = [T0 - DAY_S - 1, 500]
    recent = [T0 - HOUR_S - 1, 7]
    state_file.write_text(json.dumps({"escalations": [old, recent]}))
    limited = budget(state_file, clock, tokens_per_day=1000)
    assert limited.left() == pytest.approx(1 - 7 / 1000)  # the old entry no longer counts
    limited.record(3)
    assert stored(state_file) == [recent, [T0, 3]]
    assert not list(state_file.parent.glob(".*.tmp"))


def test_without_a_path_spending_is_kept_in_memory(clock: FakeClock) -> None:
    limited = budget(None, clock, requests_per_hour=2)
    limited.record(1)
    assert limited.left() == 0.5
    limited.record(1)
    assert limited.left() == 0.0
    clock.advance(DAY_S + 1)
    limited.record(1)  # older than a day: dropped
    assert limited.left() == 0.5


def test_an_unwritable_state_file_keeps_counting_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")  # the state file's parent is a file: no user can write there
    budget = EscalationBudget(BudgetSettings(requests_per_hour=2), blocker / "budget.json")
    budget.record(10)  # a cloud answer already streamed: this must not raise
    assert budget.left() == 0.5
    assert "not saved" in caplog.text
    budget.record(10)
    assert budget.left() == 0.0
