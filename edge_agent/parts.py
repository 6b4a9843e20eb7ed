"""The parts an agent is made of, wired from settings in one place.

:class:`EdgeParts` holds the collaborators the request pipeline uses (runtime pool,
confidence, telemetry and threshold policy, pre-route, broker link, budget, encoder, answer
cache, outcome memory, specialists); :meth:`EdgeParts.from_settings` builds the real ones.
A test or an embedding app replaces any of them: a scripted runtime through the runtime
registry, a fake broker link, a replayed telemetry sampler.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ridgeline_core.runtime import RuntimePool
from ridgeline_core.store import ManifestCatalog, ModelStore

from .confidence.registry import ConfidenceRegistry
from .knowledge.embeddings import Embedder
from .knowledge.library import Library
from .knowledge.memory import OutcomeMemory
from .knowledge.specialists import SpecialistRegistry
from .link.connector import BrokerConnector
from .link.escalation import BrokerLink
from .routing.budget import EscalationBudget
from .routing.policy import ThresholdPolicy
from .routing.preroute import PreRoute
from .settings import EdgeSettings, state_dir
from .telemetry import (
    ReplaySource,
    TelemetrySampler,
    TelemetrySource,
    TelemetryTrace,
    device_sources,
)
from .telemetry.meters import BrokerHealth, LocalSpeed

if TYPE_CHECKING:
    from .knowledge.cache import SemanticCache

__all__ = ["CacheOpener", "EdgeParts"]


class CacheOpener:
    """The semantic answer cache, opened on first use; None unless ``cache.enabled``."""

    def __init__(self, settings: EdgeSettings, embedder: Embedder) -> None:
        self._settings = settings.cache
        self._embedder = embedder
        self._cache: SemanticCache | None = None
        self._lock = threading.Lock()

    def get(self) -> SemanticCache | None:
        c = self._settings
        if not c.enabled:
            return None
        with self._lock:
            if self._cache is None:
                from .knowledge.cache import SemanticCache  # sqlite and numpy: on first use

                self._cache = SemanticCache(
                    c.path or state_dir() / "answer-cache.sqlite",
                    self._embedder.embed_one,
                    encoder=f"{self._embedder.name}/{self._embedder.variant}",
                    similarity=c.similarity,
                    ttl_s=c.ttl_s,
                    max_entries=c.max_entries,
                )
            return self._cache

    def close(self) -> None:
        with self._lock:
            if self._cache is not None:
                self._cache.close()
                self._cache = None


@dataclass
class EdgeParts:
    settings: EdgeSettings
    catalog: ManifestCatalog
    store: ModelStore
    runtimes: RuntimePool
    confidence: ConfidenceRegistry
    local_speed: LocalSpeed
    broker_health: BrokerHealth
    budget: EscalationBudget
    policy: ThresholdPolicy
    sampler: TelemetrySampler
    link: BrokerConnector
    embedder: Embedder
    memory: OutcomeMemory
    preroute: PreRoute
    specialists: SpecialistRegistry
    cache: CacheOpener
    library: Library
    owns_runtimes: bool = True  # close() unloads the models (not when the pool is shared)

    @classmethod
    def from_settings(
        cls,
        settings: EdgeSettings,
        *,
        catalog: ManifestCatalog | None = None,
        store: ModelStore | None = None,
        sampler: TelemetrySampler | None = None,
        broker: BrokerLink | None = None,
        background: bool = True,
        parallel: int = 1,
        pool: RuntimePool | None = None,
    ) -> EdgeParts:
        """The real parts. ``parallel``: copies of each model that generate at once;
        ``pool``: loaded models shared with another agent (a daemon reloading its
        settings), which the caller then closes; ``broker``: a link to use instead of the
        configured one; ``background``: sample telemetry and probe the broker on threads."""
        return cls(**_wired(settings, catalog, store, sampler, broker, background, parallel, pool))

    def close(self) -> None:
        self.sampler.close()
        self.link.close()
        self.cache.close()
        self.library.close()
        self.specialists.close()
        self.embedder.close()
        if self.owns_runtimes:
            self.runtimes.close()


def _wired(  # noqa: PLR0917 -- from_settings' options, passed on as they are
    settings: EdgeSettings,
    catalog: ManifestCatalog | None,
    store: ModelStore | None,
    sampler: TelemetrySampler | None,
    broker: BrokerLink | None,
    background: bool,
    parallel: int,
    pool: RuntimePool | None,
) -> dict[str, Any]:
    """EdgeParts' fields, the real parts for ``settings`` (see :meth:`EdgeParts.from_settings`)."""
    catalog = catalog or settings.models.catalog()
    store = store or settings.models.store()
    runtimes = pool or RuntimePool(
        catalog, store, settings.runtime.load_options(parallel), instances=parallel
    )
    local_speed = LocalSpeed(settings.telemetry.speed_alpha)
    broker_health = BrokerHealth(settings.telemetry.rtt_alpha)
    budget_file = settings.budget.state_file or state_dir() / "budget.json"
    budget = EscalationBudget(settings.budget, budget_file)
    policy = ThresholdPolicy(settings.policy)
    sampler = _started(
        sampler or _sampler(settings, [local_speed, broker_health, budget]), policy, background
    )
    embedder = Embedder(settings.embeddings, catalog, store)
    memory = _memory(settings, embedder)
    link = BrokerConnector(
        settings, broker_health, on_change=sampler.refresh, background=background, link=broker
    )
    return dict(
        settings=settings,
        catalog=catalog,
        store=store,
        runtimes=runtimes,
        confidence=ConfidenceRegistry(settings, catalog),
        local_speed=local_speed,
        broker_health=broker_health,
        budget=budget,
        policy=policy,
        sampler=sampler,
        link=link,
        embedder=embedder,
        memory=memory,
        preroute=PreRoute(settings.preroute, memory if settings.preroute.memory.enabled else None),
        specialists=SpecialistRegistry(
            settings.specialists.dir or state_dir() / "specialists", store, embedder
        ),
        cache=CacheOpener(settings, embedder),
        library=Library(
            settings.knowledge, settings.knowledge.dir or state_dir() / "knowledge", embedder
        ),
        owns_runtimes=pool is None,
    )


def _started(
    sampler: TelemetrySampler, policy: ThresholdPolicy, background: bool
) -> TelemetrySampler:
    sampler.sample_now()
    sampler.on_sample = policy.evaluate  # τ follows the device between requests
    if background:
        sampler.start()
    return sampler


def _memory(settings: EdgeSettings, embedder: Embedder) -> OutcomeMemory:
    """The outcome memory; it reads its file and embeds its prompts on first use, not here."""
    remembered = settings.preroute.memory
    path = remembered.path or state_dir() / "outcome-memory.jsonl"
    return OutcomeMemory(remembered, embedder.embed, path)


def _sampler(settings: EdgeSettings, measured: list[TelemetrySource]) -> TelemetrySampler:
    t = settings.telemetry
    if t.trace is not None:
        replay = ReplaySource(TelemetryTrace.load(t.trace))
        return TelemetrySampler([], measured=measured, overrides=replay, interval_s=t.interval_s)
    return TelemetrySampler(device_sources(t.sources), measured=measured, interval_s=t.interval_s)
