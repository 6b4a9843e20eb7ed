"""Model collaboration on the broker: strategies over the backends, found by kind.

A request runs one :class:`~.base.Strategy`: a single model, a route (one of N, by rules
or a learned router), a cascade (cheapest first, each answer verified) or an ensemble
(parallel members, combined). Named strategies come from ``[[strategies]]`` in
``broker.toml`` (:func:`build_strategies`); a request may also give a kind and models
(:func:`adhoc_strategy`, the kind's defaults). New kinds are added with
:func:`register_strategy`.
"""

from __future__ import annotations

from .base import Member, Strategy, StrategyOutcome, Text, Verdict
from .catalog import Catalog, Plan, Target
from .costs import Meter, Prices
from .members import Answer, Call
from .registry import (
    Resources,
    adhoc_strategy,
    build_strategies,
    register_strategy,
    registered_strategies,
)

__all__ = [
    "Answer",
    "Call",
    "Catalog",
    "Member",
    "Meter",
    "Plan",
    "Prices",
    "Resources",
    "Strategy",
    "StrategyOutcome",
    "Target",
    "Text",
    "Verdict",
    "adhoc_strategy",
    "build_strategies",
    "register_strategy",
    "registered_strategies",
]
