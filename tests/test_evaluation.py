"""The evaluation harness's pure logic: matching, datasets, metrics and calibrators."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_agent.evaluation import (
    CALIBRATORS,
    IsotonicCalibrator,
    LogisticCalibrator,
    PlattCalibrator,
    apgr,
    arithmetic_items,
    auroc,
    brier,
    coverage_accuracy,
    cpt,
    ece,
    is_correct,
    load_calibrator,
    load_dataset,
    normalise,
    pgr,
    random_router_baseline,
    routing_curve,
    summarise,
)
from ridgeline_core.errors import InvalidRequestError

# --- matcher -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  Paris.  ", "paris"),
        ("STRASSE vs Straße", "strasse vs strasse"),
        ("ﬁve", "five"),  # NFKC folds the ligature
        ("It is 3.5 metres.", "it is 3.5 metres"),
        ("1,000,000 people", "1000000 people"),
        ("1, 2, 3", "1 2 3"),
        ("isn't", "isnt"),
        ("-5 and 3-5", "-5 and 3 5"),
        ("snake_case\tand\nlines", "snake case and lines"),
    ],
)
def test_normalise(text: str, expected: str) -> None:
    assert normalise(text) == expected


@pytest.mark.parametrize(
    ("answer", "acceptable", "expected"),
    [
        ("Paris.", ["paris"], True),
        ("The capital is PARIS!", ["Paris"], True),
        ("It is Lyon.", ["Paris"], False),
        ("The answer is 4", ["4", "four"], True),
        ("That makes four.", ["4", "four"], True),
        ("The answer is 14", ["4"], False),
        ("4.5", ["4"], False),
        ("1,000", ["1000"], True),
        ("New York City", ["new york"], True),
        ("New Yorker", ["new york"], False),
        ("I know", ["know"], True),
        ("Paris", [], False),
        ("Paris", ["..."], False),  # normalises to nothing, ignored
    ],
)
def test_is_correct_whole_phrases_any_of(
    answer: str, acceptable: list[str], expected: bool
) -> None:
    assert is_correct(answer, acceptable) is expected


@pytest.mark.parametrize(
    ("answer", "acceptable", "expected"),
    [
        ("Yes.", ["yes"], True),
        ("Yeah, that is right", ["yes"], True),
        ("Correct.", ["yes"], True),
        ("No, it is not.", ["no"], True),
        ("Not at all", ["no"], True),
        ("It isn't.", ["no"], True),
        ("Yes, but not always", ["no"], False),
        ("No, but yes in spirit", ["yes"], False),
        ("I know the answer", ["no"], False),  # "know" is not "no"
        ("I cannot say", ["yes"], False),
        ("Maybe", ["yes"], False),
        ("Maybe", ["no"], False),
    ],
)
def test_yes_no_uses_the_first_polar_word(
    answer: str, acceptable: list[str], expected: bool
) -> None:
    assert is_correct(answer, acceptable) is expected


def test_is_correct_refuses_a_bare_string() -> None:
    with pytest.raises(TypeError):
        is_correct("paris", "paris")


# --- dataset -------------------------------------------------------------------------


def _write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_load_dataset_defaults_and_blank_lines(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        json.dumps({"prompt": "Capital of France?", "answers": ["Paris"]}),
        "",
        json.dumps({"prompt": "2+2?", "answers": ["4", "four"], "id": "m1", "kind": "math"}),
    )
    items = load_dataset(path)
    assert [(i.id, i.kind, i.prompt, i.answers) for i in items] == [
        ("line-1", "unknown", "Capital of France?", ("Paris",)),
        ("m1", "math", "2+2?", ("4", "four")),
    ]


GOOD = json.dumps({"prompt": "p", "answers": ["a"]})


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([GOOD, "{not json"], ":2: invalid JSON"),
        (["[1, 2]"], ":1: expected a JSON object"),
        ([json.dumps({"answers": ["a"]})], ":1: 'prompt' must be a non-empty string"),
        ([json.dumps({"prompt": "  ", "answers": ["a"]})], ":1: 'prompt'"),
        ([json.dumps({"prompt": "p"})], ":1: 'answers' must be a non-empty list"),
        ([json.dumps({"prompt": "p", "answers": []})], ":1: 'answers'"),
        ([json.dumps({"prompt": "p", "answers": "a"})], ":1: 'answers'"),
        ([json.dumps({"prompt": "p", "answers": ["a", ""]})], ":1: 'answers'"),
        ([json.dumps({"prompt": "p", "answers": [4]})], ":1: 'answers'"),
        ([GOOD, json.dumps({"prompt": "p", "answers": ["a"], "id": 7})], ":2: 'id'"),
        ([GOOD, json.dumps({"prompt": "p", "answers": ["a"], "kind": ""})], ":2: 'kind'"),
        (
            [
                json.dumps({"prompt": "p", "answers": ["a"], "id": "x"}),
                GOOD,
                json.dumps({"prompt": "q", "answers": ["b"], "id": "x"}),
            ],
            ":3: duplicate id 'x' (first on line 1)",
        ),
        (
            [GOOD, json.dumps({"prompt": "q", "answers": ["b"], "id": "line-1"})],
            ":2: duplicate id 'line-1'",
        ),
    ],
)
def test_load_dataset_errors_name_path_and_line(
    tmp_path: Path, lines: list[str], message: str
) -> None:
    path = _write(tmp_path, *lines)
    with pytest.raises(InvalidRequestError) as caught:
        load_dataset(path)
    assert str(caught.value).startswith(str(path) + ":")
    assert message in str(caught.value)


def test_load_dataset_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="no such file"):
        load_dataset(tmp_path / "missing.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(InvalidRequestError, match=f"{empty}: empty file"):
        load_dataset(empty)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"prompt": "caf\xe9", "answers": ["a"]}\n')
    with pytest.raises(InvalidRequestError, match="not UTF-8"):
        load_dataset(latin)


def test_load_dataset_refuses_more_than_100000_lines(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text("\n" * 100_001, encoding="utf-8")
    with pytest.raises(InvalidRequestError, match=r"big.jsonl:100001: more than 100000 lines"):
        load_dataset(path)


def test_arithmetic_items_are_deterministic_and_correct() -> None:
    items = arithmetic_items(300, seed=7)
    assert items == arithmetic_items(300, seed=7)
    assert items != arithmetic_items(300, seed=8)
    assert [i.id for i in items[:2]] == ["gen-arith-7-0", "gen-arith-7-1"]
    assert {i.kind for i in items} == {"arith-add", "arith-sub", "arith-mul"}
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    for item in items:
        expression = item.prompt.removeprefix("What is ").split("?")[0]
        a, symbol, b = expression.split()
        value = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[symbol]
        assert value >= 0
        assert item.answers[0] == str(value)
        assert len(item.answers) == (2 if value <= 20 else 1)
        if value <= 9:
            assert item.answers[1] == words[value]
        assert is_correct(f"The answer is {value}.", item.answers)
    assert {i.kind for i in arithmetic_items(20, seed=1, kinds=("mul",))} == {"arith-mul"}
    with pytest.raises(ValueError, match="unknown arithmetic kinds"):
        arithmetic_items(3, seed=1, kinds=("div",))


# --- metrics -------------------------------------------------------------------------


def test_auroc_hand_cases() -> None:
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5
    # pairs (pos, neg): (0.5 vs 0.5) tie = 1/2, (0.5 vs 0.1) = 1 -> 1.5 / 2
    assert auroc([0.5, 0.5, 0.1], [True, False, False]) == 0.75
    with pytest.raises(ValueError, match="both classes"):
        auroc([0.1, 0.2], [1, 1])


def test_auroc_matches_a_brute_force_pair_count() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(300), 1)  # many ties
    labels = rng.random(300) < 0.4
    pos, neg = scores[labels], scores[~labels]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert auroc(scores, labels) == pytest.approx(wins / (pos.size * neg.size), abs=1e-12)


def test_ece_and_brier() -> None:
    # bin [0.2, 0.3): conf 0.25, acc 1/4; bin [0.7, 0.8): conf 0.75, acc 3/4 -> 0
    assert ece([0.25] * 4 + [0.75] * 4, [1, 0, 0, 0, 1, 1, 1, 0]) == pytest.approx(0.0)
    # bin 2: conf 0.2, acc 0.5 -> 0.3; bin 8: conf 0.8, acc 1.0 -> 0.2; each weight 1/2
    assert ece([0.2, 0.2, 0.8, 0.8], [0, 1, 1, 1]) == pytest.approx(0.25)
    assert ece([1.0, 0.0], [1, 0]) == 0.0  # 1.0 falls in the last bin
    assert brier([0.2, 0.2, 0.8, 0.8], [0, 1, 1, 1]) == pytest.approx(
        (0.04 + 0.64 + 0.04 + 0.04) / 4
    )
    with pytest.raises(ValueError):
        ece([1.5], [1])


def test_coverage_accuracy() -> None:
    # most confident first: 0.9 (right), 0.7 (wrong), 0.3 (right)
    curve = coverage_accuracy([0.3, 0.9, 0.7], [1, 1, 0])
    np.testing.assert_allclose(curve, [(1 / 3, 1.0), (2 / 3, 0.5), (1.0, 2 / 3)])


def test_routing_hand_case() -> None:
    # item:            A     B      C      D
    # scores           0.3   0.1    0.5    0.9  -> escalation order B, A, C, D
    # local right      T     F      F      T    -> local_acc 0.5
    # strong right     T     T      T      T    -> strong_acc 1.0 (oracle)
    # escalated  k=0: none        -> 2/4 = 0.50, PGR 0
    #            k=1: B (F->T)    -> 3/4 = 0.75, PGR 0.5
    #            k=2: +A (T->T)   -> 3/4 = 0.75, PGR 0.5
    #            k=3: +C (F->T)   -> 4/4 = 1.00, PGR 1
    #            k=4: +D (T->T)   -> 4/4 = 1.00, PGR 1
    # CPT(50%) = 0.25, CPT(80%) = 0.75
    # APGR = 0.25 * ((0+.5)/2 + (.5+.5)/2 + (.5+1)/2 + (1+1)/2) = 0.25 * 2.5 = 0.625
    scores = [0.3, 0.1, 0.5, 0.9]
    local = [True, False, False, True]
    strong = [True, True, True, True]
    curve = routing_curve(scores, local, strong)
    assert curve == [(0.0, 0.5), (0.25, 0.75), (0.5, 0.75), (0.75, 1.0), (1.0, 1.0)]
    assert cpt(curve, 0.5, 1.0, 0.5) == 0.25
    assert cpt(curve, 0.5, 1.0, 0.8) == 0.75
    assert apgr(curve, 0.5, 1.0) == pytest.approx(0.625)
    assert np.isnan(cpt(curve, 0.5, 1.0, 1.5))


def test_routing_curve_breaks_ties_in_input_order_and_can_lose() -> None:
    # all scores tie: escalate in input order; the strong model is wrong on the first item
    curve = routing_curve([0.5, 0.5, 0.5], [True, False, True], [False, True, True])
    np.testing.assert_allclose(curve, [(0, 2 / 3), (1 / 3, 1 / 3), (2 / 3, 2 / 3), (1, 2 / 3)])


def test_pgr() -> None:
    assert pgr(0.75, 0.5, 1.0) == 0.5
    assert np.isnan(pgr(0.5, 0.6, 0.6))
    assert np.isnan(apgr([(0.0, 0.6), (1.0, 0.6)], 0.6, 0.6))


def test_random_router_baseline_is_analytic() -> None:
    rng = np.random.default_rng(3)
    local = rng.random(200) < 0.5
    strong = rng.random(200) < 0.9
    baseline = random_router_baseline(local, strong)
    assert baseline["apgr"] == pytest.approx(0.5)
    assert baseline["cpt50"] == pytest.approx(0.5)
    assert baseline["cpt80"] == pytest.approx(0.8)
    assert len(baseline["curve"]) == 201


def test_summarise() -> None:
    scores = [0.3, 0.1, 0.5, 0.9]
    probs = [0.3, 0.1, 0.5, 0.9]
    local = [True, False, False, True]
    strong = [True, True, True, False]
    summary = summarise(scores, probs, local, strong, tau=0.4)
    # tau 0.4 escalates A and B: A stays right, B becomes right -> 3/4
    assert summary["n"] == 4
    assert summary["local_accuracy"] == 0.5
    assert summary["strong_accuracy"] == 0.75
    assert summary["escalation_rate"] == 0.5
    assert summary["hybrid_accuracy"] == 0.75
    assert summary["auroc"] == 0.75
    assert summary["random"]["hybrid_accuracy"] == pytest.approx(0.625)
    assert summary["random"]["apgr"] == pytest.approx(0.5)
    assert set(summary) >= {"ece", "brier", "cpt50", "cpt80", "apgr"}
    assert np.isnan(summarise(scores, probs, [True] * 4, strong, tau=0.4)["auroc"])


# --- calibration ---------------------------------------------------------------------


def _synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = rng.random(n)
    y = rng.random(n) < 1.0 / (1.0 + np.exp(-6.0 * (s - 0.5)))
    return s, y


@pytest.mark.parametrize("kind", ["platt", "isotonic"])
def test_calibrators_are_calibrated_on_fresh_data(kind: str) -> None:
    s, y = _synthetic(5000, seed=1)
    calibrator = CALIBRATORS[kind]().fit(s, y)
    fresh_s, fresh_y = _synthetic(20000, seed=2)
    probs = calibrator.predict(fresh_s)
    assert np.all((probs >= 0) & (probs <= 1))
    assert ece(probs, fresh_y) < 0.03
    assert np.all(np.diff(calibrator.predict(np.linspace(0, 1, 50))) >= 0)


def test_platt_recovers_the_generating_slope() -> None:
    s, y = _synthetic(5000, seed=1)
    platt = PlattCalibrator().fit(s, y)
    assert platt.a == pytest.approx(6.0, rel=0.15)
    assert platt.b == pytest.approx(-3.0, rel=0.15)


def test_fits_stay_finite_on_separable_data() -> None:
    x, y = [0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]
    platt = PlattCalibrator().fit(x, y)
    assert platt.a is not None and np.isfinite(platt.a)
    assert platt.predict([0.0])[0] < 0.05 < 0.95 < platt.predict([1.0])[0]
    logistic = LogisticCalibrator().fit(np.array(x)[:, None], y)
    assert np.all(np.isfinite(logistic.predict([[0.0], [1.0]])))


def test_isotonic_pools_violators() -> None:
    iso = IsotonicCalibrator().fit([1, 2, 3, 4], [0, 1, 0, 1])
    # (1,0) then (2,1),(3,0) pool to 0.5, then (4,1)
    assert iso.predict([1, 2, 3, 4]).tolist() == [0.0, 0.5, 0.5, 1.0]
    assert iso.predict([0, 1.5, 3.5, 9]).tolist() == [0.0, 0.25, 0.75, 1.0]


def test_logistic_recovers_a_monotone_two_feature_relation() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(5000, 2))
    y = rng.random(5000) < 1.0 / (1.0 + np.exp(-(2.0 * x[:, 0] - 1.0 * x[:, 1])))
    model = LogisticCalibrator().fit(x, y)
    grid = np.linspace(-2, 2, 9)
    up = model.predict(np.column_stack([grid, np.zeros_like(grid)]))
    down = model.predict(np.column_stack([np.zeros_like(grid), grid]))
    assert np.all(np.diff(up) > 0)
    assert np.all(np.diff(down) < 0)
    assert model.coef is not None and model.std is not None
    assert (model.coef / model.std).tolist() == pytest.approx([2.0, -1.0], rel=0.15)
    with pytest.raises(ValueError, match="expected 2 features"):
        model.predict([[1.0, 2.0, 3.0]])


def test_to_dict_round_trips_through_json() -> None:
    s, y = _synthetic(500, seed=5)
    features = np.column_stack([s, s**2])
    probe = np.linspace(-0.5, 1.5, 41)
    for calibrator, x, probe_x in [
        (IsotonicCalibrator().fit(s, y), s, probe),
        (PlattCalibrator().fit(s, y), s, probe),
        (LogisticCalibrator().fit(features, y), features, np.column_stack([probe, probe**2])),
    ]:
        data = json.loads(json.dumps(calibrator.to_dict()))
        assert data["kind"] == calibrator.kind
        loaded = load_calibrator(data)
        assert type(loaded) is type(calibrator)
        np.testing.assert_array_equal(loaded.predict(probe_x), calibrator.predict(probe_x))
        np.testing.assert_array_equal(loaded.predict(x), calibrator.predict(x))


def test_load_calibrator_refuses_bad_dicts() -> None:
    with pytest.raises(ValueError, match="unknown calibrator kind"):
        load_calibrator({"kind": "magic"})
    with pytest.raises(ValueError, match="'a' must be a finite number"):
        load_calibrator({"kind": "platt", "b": 0.0})
    with pytest.raises(ValueError, match="equal, non-empty"):
        load_calibrator({"kind": "isotonic", "thresholds": [0.0, 1.0], "values": [0.5]})
    with pytest.raises(RuntimeError, match="not fitted"):
        PlattCalibrator().predict([0.5])


def test_the_project_question_set_loads_and_is_self_consistent() -> None:
    root = Path(__file__).resolve().parent.parent / "datasets" / "ridgeline-qa-v1"
    train = load_dataset(root / "train.jsonl")
    test = load_dataset(root / "test.jsonl")
    assert len(train) + len(test) >= 400
    assert not {item.prompt for item in train} & {item.prompt for item in test}
    kinds = {item.kind for item in train} | {item.kind for item in test}
    assert {"facts", "geography", "science", "arithmetic", "units", "yesno", "reasoning"} <= kinds
    for item in train + test:
        # each acceptable answer, said plainly, counts as correct
        assert is_correct(f"The answer is {item.answers[0]}.", item.answers), item.id
