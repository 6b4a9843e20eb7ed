"""The kinds of strategy by name, and building strategies from ``[[strategies]]``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ridgeline_core import errors

from ..backends import Backend
from ..strategy_settings import StrategySettings
from .base import Strategy
from .cascade import Cascade
from .ensemble import Ensemble
from .route import Route
from .single import Single
from .verify import AgreementVerifier, Calibrator, ConfidenceVerifier, JudgeVerifier, Verifier

__all__ = [
    "Resources",
    "adhoc_strategy",
    "build_strategies",
    "register_strategy",
    "registered_strategies",
]


@dataclass
class Resources:
    """What strategies are built over: the backends and the routers/calibrations loaded."""

    backends: Mapping[str, Backend]
    open_encoder: Callable[[str], tuple[Any, str]] | None = None  # for learned routers
    routers: dict[Path, Any] = field(default_factory=dict)  # router file -> LearnedRouter

    def contexts(self, models: Sequence[str]) -> dict[str, int]:
        return {m: self.backends[m].context_length for m in models}

    def router(self, path: Path, models: Sequence[str]) -> Any:
        """The learned router in ``path`` for ``models`` (loaded once: it holds an
        encoder)."""
        if path not in self.routers:
            from ..router import LearnedRouter  # loads an ONNX encoder: only when used

            if self.open_encoder is None:
                raise errors.ConfigError("learned routers need the model store (none given)")
            self.routers[path] = LearnedRouter.load(path, models, self.open_encoder)
        return self.routers[path]

    def close(self) -> None:
        for router in self.routers.values():
            router.close()
        self.routers.clear()


Factory = Callable[[StrategySettings, Resources], Strategy]


def _verifier(settings: StrategySettings, resources: Resources) -> Verifier:
    if settings.judge:
        return JudgeVerifier(settings.judge)
    if settings.verifier == "agreement":
        return AgreementVerifier(max(settings.samples, 2), settings.temperature)
    calibrator: Calibrator | None = None
    if settings.calibration_file is not None:
        calibrator = resources.router(settings.calibration_file, settings.models).confidence
    return ConfidenceVerifier(calibrator)


def _cascade(settings: StrategySettings, resources: Resources) -> Strategy:
    return Cascade(
        settings.name,
        settings.models,
        _verifier(settings, resources),
        threshold=settings.threshold,
        verify_draft=settings.verify_draft,
        draft_judge=settings.draft_verifier or settings.judge,
    )


def _route(settings: StrategySettings, resources: Resources) -> Strategy:
    router = None
    if settings.router == "learned":
        assert settings.router_file is not None  # the settings check it
        router = resources.router(settings.router_file, settings.models)
    return Route(
        settings.name,
        settings.models,
        resources.contexts(settings.models),
        rules=settings.rules,
        router=router,
        willingness_to_pay=settings.willingness_to_pay,
    )


def _ensemble(settings: StrategySettings, resources: Resources) -> Strategy:
    return Ensemble(
        settings.name,
        settings.models,
        combine=settings.combine,
        samples=settings.samples,
        temperature=settings.temperature,
        judge_model=settings.judge,
        aggregator=settings.aggregator,
        min_members=settings.min_members,
    )


def _single(settings: StrategySettings, resources: Resources) -> Strategy:
    return Single(settings.name, settings.models[0])


_KINDS: dict[str, Factory] = {
    "single": _single,
    "route": _route,
    "cascade": _cascade,
    "ensemble": _ensemble,
}


def register_strategy(kind: str, factory: Factory) -> None:
    """Offer a new kind of strategy under ``kind`` (``[[strategies]] kind = ...``)."""
    _KINDS[kind] = factory


def registered_strategies() -> list[str]:
    return sorted(_KINDS)


def build_strategies(
    configured: Sequence[StrategySettings], resources: Resources
) -> dict[str, Strategy]:
    """The named strategies of ``broker.toml``, built once at start-up."""
    built: dict[str, Strategy] = {}
    for settings in configured:
        factory = _KINDS.get(settings.kind)
        if factory is None:
            raise errors.ConfigError(
                f"strategy {settings.name!r}: kind {settings.kind!r} is not one of "
                f"{', '.join(registered_strategies())}"
            )
        built[settings.name] = factory(settings, resources)
    return built


def adhoc_strategy(kind: str, models: Sequence[str], resources: Resources) -> Strategy:
    """A strategy a request spells out (kind and models), with the kind's defaults: a
    route by rules (none: the first model that fits), a cascade verified by confidence,
    an ensemble by vote."""
    settings = StrategySettings(name=f"{kind}", kind=kind, models=list(models))  # type: ignore[arg-type]
    return build_strategies([settings], resources)[settings.name]
