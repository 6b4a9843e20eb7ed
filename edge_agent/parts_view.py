"""What an agent exposes beside answering: its parts, for commands and tools.

``edge-agent calibrate``, ``telemetry``, ``specialists`` and ``eval`` reach the loaded
models, the confidence, the threshold policy and the broker link through these.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ridgeline_core.errors import EmptyPromptError, InvalidRequestError
from ridgeline_core.progress import NULL_PROGRESS, Progress
from ridgeline_core.runtime import Runtime, RuntimePool
from ridgeline_core.store import ManifestCatalog, ModelStore

from .confidence.calibrated import ModelConfidence, Scored
from .knowledge.embeddings import Embedder
from .knowledge.library import AUTO, Library
from .knowledge.memory import Outcome, OutcomeMemory
from .knowledge.specialists import SpecialistRegistry
from .link.escalation import BrokerLink
from .parts import EdgeParts
from .request.local import LocalRun
from .request.options import RequestOptions
from .routing.budget import EscalationBudget
from .routing.policy import Threshold, ThresholdPolicy
from .routing.preroute import PreRoute
from .sdk.api import ModelInfo
from .telemetry import TelemetrySampler
from .telemetry.meters import BrokerHealth, LocalSpeed

if TYPE_CHECKING:
    from .knowledge.cache import SemanticCache
    from .request.classify import Classification

__all__ = ["KnowledgeView", "ModelsView", "PartsView", "RoutingView"]


class ModelsView:
    """The local models and how sure their answers are."""

    parts: EdgeParts

    def models(self) -> list[ModelInfo]:
        """The local models this agent knows."""
        parts = self.parts
        loaded = set(parts.runtimes.loaded())
        default = parts.settings.models.default
        n_ctx = parts.settings.runtime.n_ctx
        return [
            ModelInfo(
                name=m.name,
                runtime=m.runtime,
                role=m.role,
                context_length=_enforced_context(m.role, m.context_length, n_ctx),
                pulled=parts.store.is_present(m),
                loaded=m.name in loaded,
                default=m.name == default,
            )
            for m in parts.catalog
        ]

    def runtime(self, model: str, progress: Progress = NULL_PROGRESS) -> Runtime:
        """The loaded local model (pulled and loaded on first use)."""
        return self.pool.get(model, progress)

    def confidence_for(
        self, model: str, runtime: Runtime, knowledge: bool = False
    ) -> ModelConfidence:
        """How ``model``'s answers get their confidence (its calibration, checked once;
        the one for answers from local knowledge with ``knowledge``)."""
        return self.parts.confidence.for_model(model, runtime, knowledge)

    def score_local(self, model: str, runtime: Runtime, prompt: str, run: LocalRun) -> Scored:
        """The confidence of a finished local answer (runs the probes its calibration needs)."""
        return self.confidence_for(model, runtime).score(runtime, run.evidence(prompt))

    @property
    def pool(self) -> RuntimePool:
        """The loaded models (a daemon unloads idle ones through it)."""
        return self.parts.runtimes

    @property
    def catalog(self) -> ManifestCatalog:
        return self.parts.catalog

    @property
    def store(self) -> ModelStore:
        return self.parts.store


class RoutingView:
    """Telemetry, τ and the broker link."""

    parts: EdgeParts

    def decide_threshold(self) -> Threshold:
        """τ for the current telemetry (what ``edge-agent telemetry`` prints)."""
        return self.policy.evaluate(self.sampler.snapshot())

    def broker(self) -> BrokerLink | None:
        """The broker link, connected on first use; None when there is none (see
        :attr:`broker_missing`)."""
        return self.parts.link.link()

    @property
    def broker_missing(self) -> str | None:
        return self.parts.link.missing

    @property
    def broker_failed(self) -> bool:
        """True when a broker is configured (or discovery is on) but could not be used."""
        return self.parts.link.failed

    @property
    def sampler(self) -> TelemetrySampler:
        return self.parts.sampler

    @property
    def policy(self) -> ThresholdPolicy:
        return self.parts.policy

    @property
    def budget(self) -> EscalationBudget:
        return self.parts.budget

    @property
    def preroute(self) -> PreRoute:
        return self.parts.preroute

    @property
    def local_speed(self) -> LocalSpeed:
        return self.parts.local_speed

    @property
    def broker_health(self) -> BrokerHealth:
        return self.parts.broker_health


class KnowledgeView:
    """The encoder, the outcome memory, the specialists, the answer cache."""

    parts: EdgeParts

    def classify(
        self,
        specialist: str,
        text: str,
        options: RequestOptions | None = None,
        *,
        threshold: float | None = None,
        mode: str | None = None,
        deadline_s: float | None = None,
    ) -> Classification:
        """The specialist's label for ``text``; below its threshold the broker's model
        chooses among the same labels (see :mod:`edge_agent.request.classify`).
        ``options`` (or the keywords): ``mode``, ``threshold``, ``deadline_s``."""
        from .request.classify import classify

        given = {"threshold": threshold, "mode": mode, "deadline_s": deadline_s}
        changes = {key: value for key, value in given.items() if value is not None}
        parsed = (options or RequestOptions()).merged(**changes) if changes else options
        return classify(self.parts, specialist, text, parsed or RequestOptions())

    def feedback(
        self,
        prompt: str,
        right: bool,
        model: str | None = None,
        knowledge: Sequence[str] = (),
    ) -> Outcome:
        """Record whether ``model``'s (default: ``models.default``) local answer to
        ``prompt`` was right. The outcome memory keeps it; with ``preroute.memory.enabled``
        it moves the pre-route's prediction for similar prompts. An answer from local
        knowledge names the collections it came from (``knowledge``, as in the decision
        record): the judgment goes to them instead (their expert selection reads it,
        ``knowledge.judged_weight``), never to the outcome memory."""
        if not prompt.strip():
            raise EmptyPromptError("prompt is empty")
        name = model or self.parts.settings.models.default
        self.parts.catalog.get(name)  # UnknownModelError
        if not knowledge:
            return self.parts.memory.add(name, prompt, right, "feedback")
        return _judge(
            self.parts.library, knowledge, Outcome(prompt, name, right, "feedback", time.time())
        )

    @property
    def embedder(self) -> Embedder:
        return self.parts.embedder

    @property
    def memory(self) -> OutcomeMemory:
        return self.parts.memory

    @property
    def specialists(self) -> SpecialistRegistry:
        return self.parts.specialists

    @property
    def library(self) -> Library:
        """The knowledge collections (``edge-agent knowledge``)."""
        return self.parts.library

    @property
    def cache(self) -> SemanticCache | None:
        """The semantic answer cache, opened on first use; None unless ``cache.enabled``."""
        return self.parts.cache.get()


class PartsView(ModelsView, RoutingView, KnowledgeView):
    """All of them, as :class:`~edge_agent.agent.EdgeAgent` offers them."""


def _enforced_context(role: str, trained: int | None, n_ctx: int) -> int | None:
    """The context a generative model is loaded with (``runtime.n_ctx`` caps what it was
    trained for): the longest prompt plus answer it takes here. Encoders keep theirs."""
    if role not in ("chat", "base"):
        return trained
    return n_ctx if trained is None else min(trained, n_ctx)


def _judge(library: Library, knowledge: Sequence[str], outcome: Outcome) -> Outcome:
    """Feedback on an answer from knowledge: kept by the collections named."""
    if AUTO in knowledge:
        raise InvalidRequestError(
            "name the collections that answered (the decision record's knowledge.collections), "
            "not auto",
            param="knowledge",
        )
    library.judge(knowledge, outcome.prompt, outcome.right, outcome.source)
    return outcome
