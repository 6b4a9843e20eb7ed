"""The ``[prices]`` table and the ``[[strategies]]`` tables of ``broker.toml``.

A price is per 1000 prompt and per 1000 completion tokens, in whatever unit the operator
bills in (dollars, credits); a model without a price costs nothing. A strategy is named,
has a kind (``single``, ``route``, ``cascade``, ``ensemble``) and its models, and the
settings of its kind; :func:`check_strategies` checks them against the served models.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ridgeline_core.config import Section
from ridgeline_core.errors import ManifestError
from ridgeline_core.store.manifest import check_name

__all__ = [
    "PriceSettings",
    "RuleSettings",
    "StrategySettings",
    "check_strategies",
]

StrategyKind = Literal["single", "route", "cascade", "ensemble"]


class PriceSettings(Section):
    prompt_per_1k: float = Field(default=0.0, ge=0, description="per 1000 prompt tokens")
    completion_per_1k: float = Field(default=0.0, ge=0, description="per 1000 completion tokens")

    @field_validator("prompt_per_1k", "completion_per_1k")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("a price must be a finite number")
        return value


class RuleSettings(Section):
    """One routing rule: the first rule whose conditions all hold picks its model."""

    model: str = Field(description="the model this rule picks")
    task: str = Field(default="", description="matches a request whose Strategy.task is this")
    min_prompt_chars: int = Field(default=0, ge=0, description="prompt at least this long")
    max_prompt_chars: int = Field(default=0, ge=0, description="prompt at most this long; 0: any")


class _VerifyFields(Section):
    """How a cascade (or an ensemble picking the best) judges answers."""

    verifier: str = Field(
        default="confidence",
        description=(
            "cascade: how an answer is judged: confidence (the model's token probabilities, "
            "calibrated when calibration_file is set), agreement (of `samples` samples), or "
            "verifier:<model> (that model's P(yes), one forward pass); ensemble combine=best "
            "uses verifier:<model>"
        ),
    )
    threshold: float = Field(default=0.5, ge=0, le=1, description="accept at this score or above")
    samples: int = Field(
        default=1, ge=1, le=16, description="agreement: samples; ensemble: answers per model"
    )
    temperature: float = Field(default=0.7, gt=0, le=2, description="temperature of samples")
    verify_draft: bool = Field(
        default=True, description="cascade: verify the device's draft first (stage 0)"
    )
    draft_verifier: str = Field(
        default="",
        description="cascade: the model judging a draft (P(yes)); empty: the first model",
    )

    calibration_file: Path | None = Field(
        default=None,
        description="cascade verifier=confidence: a router file whose calibration to use",
    )


class _CombineFields(Section):
    combine: Literal["vote", "best", "fuse"] = Field(
        default="vote", description="ensemble: majority vote, verifier's best, or fuse"
    )
    aggregator: str = Field(default="", description="ensemble combine=fuse: the fusing model")
    min_members: int = Field(default=1, ge=1, description="ensemble: answers needed")


class _RouteFields(Section):
    router: Literal["rules", "learned"] = Field(default="rules", description="route: how")
    rules: list[RuleSettings] = Field(default_factory=list, description="route: rules, in order")
    router_file: Path | None = Field(
        default=None, description="route=learned: file from `cloud-broker router train`"
    )
    willingness_to_pay: float = Field(
        default=1.0,
        ge=0,
        description=(
            "route=learned: price paid for one point (0..1) of expected accuracy; larger "
            "picks stronger, dearer models; 0: the cheapest model"
        ),
    )


class StrategySettings(_VerifyFields, _CombineFields, _RouteFields):
    """One named strategy (``[[strategies]]``)."""

    name: str = Field(description="what requests ask for (Strategy.name)")
    kind: StrategyKind = Field(description="single, route, cascade or ensemble")
    models: list[str] = Field(min_length=1, description="members, cheapest first")
    max_cost: float = Field(default=0.0, ge=0, description="default max_cost; 0: none")

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        try:
            return check_name(value)
        except ManifestError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _check_kind(self) -> StrategySettings:
        if self.kind == "single" and len(self.models) != 1:
            raise ValueError(f"strategy {self.name!r}: kind single takes exactly one model")
        if self.router == "learned" and self.router_file is None:
            raise ValueError(f"strategy {self.name!r}: router = learned needs router_file")
        if self.combine == "fuse" and self.kind == "ensemble" and not self.aggregator:
            raise ValueError(f"strategy {self.name!r}: combine = fuse needs an aggregator")
        if not (self.verifier in ("confidence", "agreement") or _judge(self.verifier)):
            raise ValueError(
                f"strategy {self.name!r}: verifier {self.verifier!r} is not confidence, "
                "agreement or verifier:<model>"
            )
        if self.kind == "ensemble" and self.combine == "best" and not _judge(self.verifier):
            raise ValueError(f"strategy {self.name!r}: combine = best needs verifier:<model>")
        return self

    @property
    def judge(self) -> str:
        """The verifier model of ``verifier:<model>``, else empty."""
        return _judge(self.verifier)

    def referenced_models(self) -> list[str]:
        """Every model this strategy may run."""
        named = [*self.models, *(rule.model for rule in self.rules)]
        named += [m for m in (self.judge, self.draft_verifier, self.aggregator) if m]
        return named

    @property
    def method(self) -> str:
        """How answers are judged or combined, as ListModels shows it."""
        if self.kind == "route":
            return self.router
        if self.kind == "ensemble":
            return {"vote": "vote", "best": self.verifier, "fuse": f"fuse:{self.aggregator}"}[
                self.combine
            ]
        return self.verifier if self.kind == "cascade" else ""


def _judge(verifier: str) -> str:
    prefix, _, model = verifier.partition(":")
    return model if prefix == "verifier" and model else ""


def check_strategies(
    strategies: list[StrategySettings], prices: dict[str, PriceSettings], served: Collection[str]
) -> None:
    """Names are unique, every model a strategy or a price names is served."""
    seen: set[str] = set()
    listing = ", ".join(sorted(served)) or "none"
    for strategy in strategies:
        if strategy.name in seen:
            raise ValueError(f"strategy {strategy.name!r} is configured twice")
        if strategy.name in served:
            raise ValueError(f"strategy {strategy.name!r} has the name of a served model")
        seen.add(strategy.name)
        for model in strategy.referenced_models():
            if model not in served:
                raise ValueError(
                    f"strategy {strategy.name!r} names model {model!r}, which is not served "
                    f"(served: {listing})"
                )
    for model in prices:
        if model not in served:
            raise ValueError(f"prices names model {model!r}, which is not served ({listing})")
