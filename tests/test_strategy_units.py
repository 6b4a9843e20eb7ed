"""The pure parts of the strategies: votes, the route's choice, max_cost's meter, the
settings' checks, and a learned route whose router file is unusable at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from cloud_broker.settings import BrokerSettings
from cloud_broker.strategies import Meter, Prices, Resources, build_strategies
from cloud_broker.strategies.route import choose
from cloud_broker.strategies.vote import majority, vote_key
from cloud_broker.strategy_settings import PriceSettings, StrategySettings
from ridgeline_core.errors import ConfigError


def test_votes_compare_normalised_first_lines_and_polar_words() -> None:
    assert vote_key("Paris.\nIt is in France.") == vote_key("paris")
    assert vote_key("No, sound cannot travel in a vacuum.") == "no"
    assert vote_key("Yes") == "yes"
    assert vote_key("1,720") == vote_key("1720")
    assert vote_key("\n  \n") == ""
    assert majority(["paris", "lyon", "paris"]) == ("paris", 2)
    assert majority(["lyon", "paris"]) == ("lyon", 1)  # a tie: the earliest (cheapest)
    assert majority(["", ""]) == ("", 0)


def test_the_route_weighs_p_correct_against_cost() -> None:
    predicted = {"small": 0.40, "large": 0.60}
    costs = {"small": 0.001, "large": 0.003}
    assert choose(predicted, costs, wtp=0.0) == "small"  # nothing is worth paying for
    assert choose(predicted, costs, wtp=0.005) == "small"  # 0.2 points cost 0.4: too dear
    assert choose(predicted, costs, wtp=0.1) == "large"
    assert choose({"small": 0.5, "large": 0.5}, costs, wtp=1.0) == "small"


def test_the_meter_refuses_what_would_pass_max_cost() -> None:
    prices = Prices({"m": PriceSettings(prompt_per_1k=1.0, completion_per_1k=2.0)})
    assert prices.cost("m", 1000, 500) == pytest.approx(2.0)
    assert prices.cost("unpriced", 10**6, 10**6) == 0
    meter = Meter(prices, max_cost=1.0)
    assert meter.affordable(0.6)
    key = meter.reserve(0.6)
    assert not meter.affordable(0.5)  # a running member's estimate counts
    meter.settle(key, 0.3)
    assert meter.spent == pytest.approx(0.3) and meter.affordable(0.7)
    assert Meter(prices, None).affordable(10**9)


def test_strategy_settings_are_checked_against_the_served_models() -> None:
    with pytest.raises(ValidationError, match="names model 'nope', which is not served"):
        BrokerSettings.model_validate(
            {"strategies": [{"name": "s", "kind": "cascade", "models": ["nope"]}]}
        )
    with pytest.raises(ValidationError, match="configured twice"):
        BrokerSettings.model_validate(
            {"strategies": [{"name": "s", "kind": "single", "models": ["gemma3-270m"]}] * 2}
        )
    with pytest.raises(ValidationError, match="router = learned needs router_file"):
        StrategySettings(name="s", kind="route", models=["a"], router="learned")
    with pytest.raises(ValidationError, match="is not confidence, agreement"):
        StrategySettings(name="s", kind="cascade", models=["a"], verifier="magic")
    with pytest.raises(ValidationError, match="prices names model"):
        BrokerSettings.model_validate({"prices": {"nope": {"prompt_per_1k": 1}}})


@pytest.mark.parametrize("content", [None, "{not json", '{"format": "x"}'])
def test_a_learned_route_with_an_unusable_router_file_stops_start_up(
    tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "router.json"
    if content is not None:
        path.write_text(content)
    settings = StrategySettings(
        name="smart", kind="route", models=["a", "b"], router="learned", router_file=path
    )
    resources = Resources({}, open_encoder=lambda name: (None, ""))
    with pytest.raises(ConfigError, match=f"router file {path}"):
        build_strategies([settings], resources)
