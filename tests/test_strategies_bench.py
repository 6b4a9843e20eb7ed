"""The pure parts of benchmarks/strategies.py: the RouteLLM metrics on a hand-made curve,
the oracle router, the vote and its fallback rows, the agreement cascade replay, the rules
fitted on train, and the broker.toml that ``run`` writes. No model, no broker."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_strategies", ROOT / "benchmarks" / "strategies.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bench = _load()

# weak 0.5, strong 0.7; one router point at 50 % strong calls with accuracy 0.65 (PGR 0.75)
WEAK, STRONG = 0.5, 0.7
POINT = [(0.5, 0.65)]


def test_apgr_is_the_area_under_pgr_of_the_curve_through_the_ends() -> None:
    # PGR 0 at 0, 0.75 at 0.5, 1 at 1: 0.5 * 0.375 + 0.5 * 0.875
    assert bench.apgr(POINT, WEAK, STRONG) == pytest.approx(0.625)
    # no point: the straight line of a random router
    assert bench.apgr([], WEAK, STRONG) == pytest.approx(0.5)
    # a point below the line costs area
    assert bench.apgr([(0.5, 0.55)], WEAK, STRONG) == pytest.approx(0.375)


def test_cpt_interpolates_between_the_points() -> None:
    assert bench.cpt(POINT, WEAK, STRONG, 0.5) == pytest.approx(1 / 3)
    assert bench.cpt(POINT, WEAK, STRONG, 0.8) == pytest.approx(0.6)
    assert bench.cpt([], WEAK, STRONG, 0.5) == pytest.approx(0.5)
    # a point that beats the strong model reaches PGR 1.25; nothing reaches 1.5
    assert bench.cpt([(0.4, 0.75)], WEAK, STRONG, 1.25) == pytest.approx(0.4)
    assert math.isnan(bench.cpt([(0.4, 0.75)], WEAK, STRONG, 1.5))


def test_curve_keeps_the_best_point_per_share_and_refuses_shares_outside() -> None:
    line = bench.curve([(0.5, 0.6), (0.5, 0.65), (0.0, 0.52)], WEAK, STRONG)
    assert line == [(0.0, 0.52), (0.5, 0.65), (1.0, 0.7)]
    with pytest.raises(ValueError, match="outside"):
        bench.curve([(1.5, 0.6)], WEAK, STRONG)
    assert math.isnan(bench.pgr(0.6, 0.5, 0.5))


def test_oracle_picks_the_cheapest_right_model_else_the_cheapest() -> None:
    correct = np.array([[True, True], [False, True], [False, False], [True, False], [False, False]])
    cost = np.array([[1, 2], [1, 2], [1, 2], [3, 2], [3, 2]], dtype=float)
    assert bench.oracle(correct, cost).tolist() == [0, 1, 0, 0, 1]


def test_vote_key_reads_yes_no_and_the_first_line() -> None:
    assert bench.vote_key("Yes, it is.") == "yes"
    assert bench.vote_key(" Not really") == "no"
    assert bench.vote_key("The Sahara.\nIt is hot.") == "the sahara"
    assert bench.vote_key("\n\n  1,000 metres") == "1000 metres"
    assert bench.vote_key(" ".join(["w"] * 20)) == " ".join(["w"] * 12)
    assert bench.vote_key("  ") == ""


def test_vote_takes_the_majority_first_voter_and_breaks_ties_early() -> None:
    assert bench.vote(["Lyon", "Paris", "paris."]) == 1
    assert bench.vote(["Paris", "Lyon"]) == 0  # a tie: the earliest
    assert bench.vote(["", " ", "Rome"]) == 2  # empty answers do not vote
    assert bench.vote(["", ""]) == -1
    assert bench.vote(["No.", "Yes", "Nope, never"]) == 0


def outcomes() -> object:
    """Three questions, members: smollm2 greedy and two samples, gemma greedy."""
    members = [bench.SMOLLM2, f"{bench.SMOLLM2}@t0.7-s1", f"{bench.SMOLLM2}@t0.7-s2", bench.GEMMA]
    answers = [
        ["Paris", "Paris", "paris", "Lyon"],  # smollm2 right, samples agree
        ["Lyon", "Paris", "Paris", "Paris"],  # greedy wrong, samples outvote it
        ["Rome", "Milan", "Turin", "Rome"],  # nobody agrees with the greedy smollm2
    ]
    right = {"Paris": True, "paris": True, "Rome": True}
    correct = np.array([[a in right for a in row] for row in answers])
    cost = np.array([[1.0, 1.0, 1.0, 2.0]] * 3)
    latency = np.array([[10.0, 20.0, 30.0, 15.0]] * 3)
    return bench.Outcomes(
        ids=["q1", "q2", "q3"],
        kinds=["geo", "geo", "geo"],
        members=members,
        models=[bench.SMOLLM2] * 3 + [bench.GEMMA],
        correct=correct,
        cost=cost,
        latency_ms=latency,
        answers=answers,
    )


def test_vote_rows_combine_members_and_cost_their_sum() -> None:
    o = outcomes()
    rows = {row.name: row for row in bench.vote_rows(o)}
    every = rows["vote: all 4 members"]
    assert every.correct.tolist() == [True, True, True]
    assert every.cost.tolist() == [5.0, 5.0, 5.0]
    assert every.latency_ms.tolist() == [30.0, 30.0, 30.0]  # in parallel: the slowest
    assert every.strong is None  # ensembles have no curve
    own = rows[f"vote: {bench.SMOLLM2} greedy + 2 samples"]
    assert own.correct.tolist() == [True, True, True]  # q3: a three-way tie, greedy first


def test_agreement_cascade_passes_on_what_the_samples_disagree_with() -> None:
    o = outcomes()
    pair = bench.Pair(bench.SMOLLM2, bench.GEMMA, 2 / 3, 2 / 3, 6.0)
    rows = {row.name: row for row in bench.agreement_cascade_rows(o, pair)}
    strict = rows["cascade agreement ≥ 1.00 (2 samples)"]
    # q1: both samples agree -> kept; q2: none agree -> gemma (right); q3 -> gemma (right)
    assert strict.strong.tolist() == [False, True, True]
    assert strict.correct.tolist() == [True, True, True]
    assert strict.cost.tolist() == [3.0, 5.0, 5.0]
    assert strict.latency_ms.tolist() == [60.0, 75.0, 75.0]


def test_rules_pick_the_most_accurate_model_per_kind_on_train() -> None:
    o = outcomes()
    o.kinds = ["geo", "geo", "math"]
    assert bench.kind_rules(o) == {"geo": bench.SMOLLM2, "math": bench.SMOLLM2}
    o.correct[:, 3] = [True, True, True]
    assert bench.kind_rules(o) == {"geo": bench.GEMMA, "math": bench.SMOLLM2}


def test_oracle_row_and_pair_from_outcomes() -> None:
    o = outcomes()
    o.correct[:, 3] = [False, True, True]
    pair = bench.pair_of(o)
    assert (pair.weak, pair.strong) == (bench.SMOLLM2, bench.GEMMA)
    row = bench.oracle_row(o, pair)
    assert row.correct.tolist() == [True, True, True]
    assert row.strong.tolist() == [False, True, False]  # q3: smollm2 right and cheaper
    measured = bench.measure([*bench.single_rows(o, pair), row], pair)
    assert [m.get("apgr") is None for m in measured] == [True, True, False]
    assert measured[2]["oracle_gap"] == pytest.approx(1.0)


def test_broker_toml_holds_prices_and_named_strategies() -> None:
    args = bench.parse_args(["run", "--thresholds", "0.5", "--samples", "2"])
    specs = bench.strategy_specs(args, {"geography": bench.GEMMA}, Path("/tmp/router.json"))
    config = tomllib.loads(bench.broker_toml(Path("/store"), bench.strategies_toml(specs)))
    assert config["prices"][bench.GEMMA] == {"prompt_per_1k": 0.002, "completion_per_1k": 0.004}
    by_name = {s["name"]: s for s in config["strategies"]}
    assert by_name["rules"]["rules"] == [{"task": "geography", "model": bench.GEMMA}]
    assert by_name["learned"]["router_file"] == "/tmp/router.json"
    assert by_name["cascade-confidence-50"]["threshold"] == 0.5
    assert by_name["vote"] == {
        "name": "vote",
        "kind": "ensemble",
        "models": list(bench.MODELS),
        "combine": "vote",
        "samples": 3,
        "temperature": 0.7,
    }
    assert config["models"]["serve"] == list(bench.MODELS)
    assert config["limits"]["requests_per_minute"] == 0


def test_sampled_members_draw_a_seed_per_question() -> None:
    greedy, sample = bench.members(1, 0.7)[:2]
    assert greedy.seed("q1") is None and greedy.name == bench.SMOLLM2
    assert sample.name == f"{bench.SMOLLM2}@t0.7-s1"
    assert sample.seed("q1") != sample.seed("q2")
    assert sample.seed("q1") == bench.Member(bench.SMOLLM2, 0.7, 1).seed("q1")
