"""The escalation budget: hourly and daily limits, sliding windows, a shared state file."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest

from edge_agent.routing.budget import DAY_S, HOUR_S, EscalationBudget
from edge_agent.settings import BudgetSettings

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


def test_a_corrupt_file_is_moved_aside_with_a_warning(
    state_file: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    # It used to stop every command (ConfigError, "remove it to reset"); a state file
    # must not keep the agent from answering (issue 16), and whoever could write it could
    # as well have removed it.
    state_file.parent.mkdir(parents=True)
    state_file.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="edge_agent.routing.budget"):
        limited = budget(state_file, clock, requests_per_hour=2)
    assert limited.left() == 1.0
    assert str(state_file) in caplog.text and "moved it to budget.json.corrupt-" in caplog.text
    (aside,) = state_file.parent.glob("budget.json.corrupt-*")
    assert aside.read_text() == "{not json"
    assert not state_file.exists()
    limited.record(1)
    assert stored(state_file) == [[T0, 1]]


@pytest.mark.parametrize(
    "content", ['{"spent": []}', '{"escalations": {"a": 1}}', "[]", "3", '"x"', "null"]
)
def test_a_file_that_is_not_a_spending_file_is_moved_aside(
    state_file: Path, clock: FakeClock, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    state_file.parent.mkdir(parents=True)
    state_file.write_text(content)
    with caplog.at_level(logging.WARNING, logger="edge_agent.routing.budget"):
        assert budget(state_file, clock, requests_per_hour=2).left() == 1.0
    assert "moved it to" in caplog.text
    assert len(list(state_file.parent.glob("budget.json.corrupt-*"))) == 1


BAD_ENTRIES = [
    [math.inf, 3], [-math.inf, 3], [math.nan, 3], [T0, math.inf], [T0, math.nan], [T0, -1],
    [T0, 1.5], ["x", 1], [T0, "2"], [True, 1], [T0, None], [1, 2, 3], [T0], "entry", None,
    {"at": T0}, [T0, 10**30],
]  # fmt: skip


def test_entries_that_are_not_a_time_and_tokens_are_dropped(
    state_file: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    state_file.parent.mkdir(parents=True)
    good = [[T0 - 10, 7], [T0 - 20, 3.0]]  # JSON's 3.0 is 3
    state_file.write_text(json.dumps({"escalations": [*BAD_ENTRIES, *good]}))
    with caplog.at_level(logging.WARNING, logger="edge_agent.routing.budget"):
        limited = budget(state_file, clock, requests_per_hour=4, tokens_per_day=100)
        assert limited.left() == 0.5
        assert limited.left() == 0.5
    assert caplog.text.count("WARNING") == 1
    assert f"dropped {len(BAD_ENTRIES)} invalid entries" in caplog.text
    assert str(state_file) in caplog.text
    assert stored(state_file) == [[T0 - 10, 7], [T0 - 20, 3]]  # repaired on disk
    assert not list(state_file.parent.glob("budget.json.corrupt-*"))


def test_an_infinite_token_count_does_not_stop_a_record(state_file: Path, clock: FakeClock) -> None:
    limited = budget(state_file, clock, requests_per_hour=4)
    limited.record(1)
    state_file.write_text('{"escalations": [[Infinity, Infinity], [1700000000.0, 5]]}')
    limited.record(2)  # another process wrote the file: merged, its bad entry dropped
    assert stored(state_file) == [[T0, 5], [T0, 2]]
    assert limited.left() == 0.5


def test_future_times_are_counted_as_now_and_expire(
    state_file: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    # The clock went back a day after these were written: they count once, from now,
    # and age out like any other, instead of reading as spent until the clock gets there.
    state_file.parent.mkdir(parents=True)
    ahead = [[T0 + DAY_S, 1], [T0 + 2 * HOUR_S, 1], [T0 + 5, 1]]  # the last: within tolerance
    state_file.write_text(json.dumps({"escalations": ahead}))
    with caplog.at_level(logging.WARNING, logger="edge_agent.routing.budget"):
        limited = budget(state_file, clock, requests_per_hour=3)
    assert "2 entries dated in the future" in caplog.text
    assert stored(state_file) == [[T0, 1], [T0, 1], [T0 + 5, 1]]
    assert limited.left() == 0.0
    clock.advance(HOUR_S + 10)
    assert limited.left() == 1.0
    again = budget(state_file, clock, requests_per_hour=3)  # a later process agrees
    assert again.left() == 1.0


def test_a_clock_going_back_while_running_does_not_freeze_the_budget(
    state_file: Path, clock: FakeClock
) -> None:
    limited = budget(state_file, clock, requests_per_hour=1)
    limited.record(1)
    assert limited.left() == 0.0
    clock.advance(-DAY_S)  # the clock steps back a day
    assert limited.left() == 0.0  # the escalation counts, from now
    clock.advance(HOUR_S + 1)
    assert limited.left() == 1.0
    assert stored(state_file) == [[T0 - DAY_S, 1]]  # the file says so too
    limited.record(1)
    assert stored(state_file) == [[T0 - DAY_S, 1], [T0 - DAY_S + HOUR_S + 1, 1]]


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
