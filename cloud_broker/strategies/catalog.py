"""Which strategy answers a request: :class:`Catalog` turns a request's :class:`Target` (a
model, a configured strategy's name, or a kind over models) into a :class:`Plan`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ridgeline_core import errors

from ..backends import Backend
from ..strategy_settings import PriceSettings, StrategySettings
from .base import Strategy
from .costs import Prices
from .registry import Resources, adhoc_strategy, build_strategies
from .single import Single

__all__ = ["Catalog", "Plan", "Target"]


@dataclass(frozen=True)
class Target:
    """What a request asks to be answered by: a model, a named strategy, or a kind of
    strategy over models (all empty: the broker's default model)."""

    model: str = ""
    name: str = ""
    kind: str = ""  # single, route, cascade, ensemble; empty: not given
    models: tuple[str, ...] = ()
    task: str = ""
    willingness_to_pay: float | None = None
    max_cost: float | None = None


@dataclass(frozen=True)
class Plan:
    """The strategy that answers, and the request's knobs for it."""

    strategy: Strategy
    task: str = ""
    willingness_to_pay: float | None = None
    max_cost: float | None = None

    @property
    def label(self) -> str:
        """The metrics label: the strategy's name, the model, or the kind."""
        strategy = self.strategy
        if strategy.kind == "single" and not strategy.name:
            return strategy.models[0]
        return strategy.name or strategy.kind


class Catalog:
    """The served models, their prices and the named strategies."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        default_model: str,
        configured: Sequence[StrategySettings] = (),
        prices: Mapping[str, PriceSettings] | None = None,
        open_encoder: Callable[[str], tuple[Any, str]] | None = None,
    ) -> None:
        self.backends, self.default_model = dict(backends), default_model
        self.configured = list(configured)
        self.prices = Prices(prices or {})
        self.resources = Resources(self.backends, open_encoder)
        self.named: dict[str, Strategy] = {}
        self._defaults = {s.name: s.max_cost for s in self.configured}

    def load(self) -> None:
        """Build the named strategies (a learned router loads its encoder: run off the
        event loop)."""
        self.named = build_strategies(self.configured, self.resources)

    def close(self) -> None:
        self.resources.close()

    def plan(self, target: Target) -> Plan:
        if target.name or (not target.kind and target.model in self.named):
            strategy = self._named(target)
            default = self._defaults.get(strategy.name) or None
            max_cost = target.max_cost if target.max_cost is not None else default
        else:
            strategy, max_cost = _spelled_out(self, target), target.max_cost
        return Plan(strategy, target.task, target.willingness_to_pay, max_cost)

    def _named(self, target: Target) -> Strategy:
        name = target.name or target.model
        strategy = self.named.get(name)
        if strategy is None:
            configured = ", ".join(sorted(self.named)) or "none"
            raise errors.UnknownStrategyError(
                f"unknown strategy {_shown(name)} (configured: {configured})"
            )
        if target.kind and target.kind != strategy.kind:
            raise errors.InvalidRequestError(
                f"strategy {name!r} is a {strategy.kind}, not a {target.kind}",
                param="strategy.kind",
            )
        if target.models and tuple(target.models) != tuple(strategy.models):
            raise errors.InvalidRequestError(
                f"strategy {name!r} runs {', '.join(strategy.models)}; leave models empty "
                "or give exactly those",
                param="strategy.models",
            )
        return strategy

    def served(self, name: str) -> str:
        """``name``, when it is a served model."""
        if name not in self.backends:
            served = ", ".join(sorted(self.backends)) or "none"
            raise errors.UnknownModelError(f"unknown model {_shown(name)} (served: {served})")
        return name


def _spelled_out(catalog: Catalog, target: Target) -> Strategy:
    """A strategy the request spells out: a model, or a kind and models."""
    if target.kind in ("", "single"):
        if len(target.models) > 1:
            raise errors.InvalidRequestError("strategy KIND_SINGLE takes at most one model")
        model = target.model or (target.models[0] if target.models else catalog.default_model)
        return Single("", catalog.served(model))
    if not target.models:
        for strategy in catalog.named.values():
            if strategy.kind == target.kind:
                return strategy
        raise errors.InvalidRequestError(
            f"a {target.kind} strategy needs models (no [[strategies]] of that kind is configured)",
            param="strategy.models",
        )
    models = [catalog.served(model) for model in target.models]
    if len(set(models)) != len(models):
        raise errors.InvalidRequestError("strategy.models names a model twice")
    strategy = adhoc_strategy(target.kind, models, catalog.resources)
    strategy.name = ""
    return strategy


def _shown(name: str) -> str:
    return repr(name) if len(name) <= 128 and name.isprintable() else "(invalid name)"
