"""The edge agent in-process: answer on this device when confident, escalate otherwise.

:class:`EdgeAgent` is a facade over its :class:`~edge_agent.parts.EdgeParts` (wired from
settings by :meth:`EdgeAgent.from_settings`, or given). Each request is parsed once into
:class:`~edge_agent.request.options.RequestOptions`, prepared (conversation, model,
sampling) and run through the :class:`~edge_agent.request.pipeline.Pipeline`, whose
events ``ask`` drains and ``stream`` forwards. Every answer carries a
:class:`~edge_agent.request.decision.Decision` saying which path ran and why.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from typing_extensions import Unpack

from ridgeline_core.cancel import CancelToken
from ridgeline_core.errors import EmptyPromptError
from ridgeline_core.progress import NULL_PROGRESS, Progress
from ridgeline_core.runtime import Runtime, RuntimePool
from ridgeline_core.store import ManifestCatalog, ModelStore

from .confidence.calibrated import ModelConfidence, Scored
from .knowledge.embeddings import Embedder
from .knowledge.memory import Outcome, OutcomeMemory
from .knowledge.specialists import SpecialistRegistry
from .link.escalation import BrokerLink
from .parts import EdgeParts
from .request.answer import Answer, AnswerTimings, SignalSummary
from .request.conversation import Prompt, chat_messages, conversation
from .request.events import Done, Event, Reset, TextChunk
from .request.local import LocalRun, run_local
from .request.options import AskOptions, RequestOptions
from .request.pipeline import Pipeline, PreparedRequest
from .routing.budget import EscalationBudget
from .routing.policy import Threshold, ThresholdPolicy
from .routing.preroute import PreRoute
from .sdk.api import Answerer, ModelInfo
from .settings import EdgeSettings
from .telemetry import TelemetrySampler
from .telemetry.meters import BrokerHealth, LocalSpeed

if TYPE_CHECKING:
    from .knowledge.cache import SemanticCache
    from .knowledge.classify import Classification

__all__ = [
    "Answer",
    "AnswerTimings",
    "EdgeAgent",
    "LocalRun",
    "SignalSummary",
    "chat_messages",
    "conversation",
    "run_local",
]


class EdgeAgent(Answerer):
    """Answers prompts on the device and escalates to the broker when that is worth it.

    Loads each model once, on first use; connects to the broker on the first escalation.
    ``close()`` (or ``with``) stops the telemetry sampler and the broker prober.
    """

    def __init__(
        self, settings: EdgeSettings, *, parts: EdgeParts | None = None, **wiring: Any
    ) -> None:
        """``parts``: the collaborators to use; without them they are wired from
        ``settings`` (see :meth:`EdgeParts.from_settings` for ``wiring``: ``sampler``,
        ``broker``, ``background``, ``parallel``, ``pool``, ``catalog``, ``store``)."""
        self.settings = settings
        self.parts = parts if parts is not None else EdgeParts.from_settings(settings, **wiring)

    @classmethod
    def from_settings(cls, settings: EdgeSettings, **wiring: Any) -> EdgeAgent:
        """An agent with the real parts for ``settings``."""
        return cls(settings, parts=EdgeParts.from_settings(settings, **wiring))

    @classmethod
    def from_config(cls, config_file: pathlib.Path | None = None, **wiring: Any) -> EdgeAgent:
        """An agent with the settings ``edge-agent`` would use: ``config_file`` (default
        ``$RIDGELINE_EDGE_CONFIG`` or the user's edge.toml), then ``RIDGELINE_EDGE_*``."""
        from .settings import load_edge_settings

        loaded = load_edge_settings(config_file=config_file, env=os.environ)
        return cls.from_settings(loaded.settings, **wiring)

    # -- answering -------------------------------------------------------------------

    def ask(
        self,
        prompt: Prompt,
        *,
        on_text: Callable[[str], None] | None = None,
        on_reset: Callable[[str], None] | None = None,
        cancel: CancelToken | None = None,
        progress: Progress = NULL_PROGRESS,
        **options: Unpack[AskOptions],
    ) -> Answer:
        """Answer ``prompt`` (a question, or a chat ending with the user's turn; see
        :func:`~edge_agent.request.conversation.conversation`).

        ``options`` are :class:`RequestOptions`' fields: ``max_tokens``, ``temperature``,
        ``top_p``, ``seed`` and ``stop`` override ``generation`` settings; ``mode`` and
        ``threshold`` the policy; ``deadline_s`` bounds the broker call; ``private`` keeps
        the prompt out of the answer cache and the outcome memory. ``on_text`` receives the
        answer's text as it becomes final (broker text as it arrives when ``on_reset`` is
        given too; ``on_reset(reason)`` then says when it is abandoned because the broker
        failed mid-answer). Cancelling ``cancel`` stops the work at the next token or broker
        event with RequestCancelledError. :meth:`stream` gives the same as events."""
        parsed = RequestOptions.parse(options)
        live = on_reset is not None
        pipeline = self.pipeline(prompt, parsed, live=live, cancel=cancel, progress=progress)
        for event in pipeline.events():
            if isinstance(event, TextChunk) and on_text is not None:
                on_text(event.text)
            elif isinstance(event, Reset) and on_reset is not None:
                on_reset(event.reason)
            elif isinstance(event, Done):
                return event.answer
        raise RuntimeError("the pipeline ended without an answer")

    def pipeline(
        self,
        prompt: Prompt,
        options: RequestOptions,
        *,
        live: bool = False,
        cancel: CancelToken | None = None,
        progress: Progress = NULL_PROGRESS,
    ) -> Pipeline:
        """The request, checked (InvalidRequestError, UnknownModelError now, before any
        work) and ready to run. ``live``: the consumer handles ``Reset`` events, so broker
        text may stream as it comes."""
        return self.run(self.prepare(prompt, options), live=live, cancel=cancel, progress=progress)

    def run(
        self,
        request: PreparedRequest,
        *,
        live: bool = False,
        cancel: CancelToken | None = None,
        progress: Progress = NULL_PROGRESS,
    ) -> Pipeline:
        """The pipeline of a prepared request; its clock (and τ) start now."""
        return Pipeline(self.parts, request, live=live, cancel=cancel, progress=progress)

    def prepare(self, prompt: Prompt, options: RequestOptions) -> PreparedRequest:
        """What :meth:`ask` checks before any work: the conversation, the model name."""
        settings = self.settings
        messages, question = conversation(prompt, settings.generation.system_prompt)
        if options.model is not None:
            self.catalog.get(options.model)  # UnknownModelError, ManifestError for a path
        return PreparedRequest(
            messages=messages,
            question=question,
            model=options.model or settings.models.default,
            params=options.sampling(settings.generation.sampling()),
            mode=options.mode or settings.policy.mode,
            deadline_s=(
                settings.escalation.deadline_s if options.deadline_s is None else options.deadline_s
            ),
            options=options,
        )

    def check(self, prompt: Prompt, **options: Unpack[AskOptions]) -> None:
        """Raise what :meth:`ask` would raise for a malformed request, without doing any
        work (a daemon answers 400 before it admits the request)."""
        self.prepare(prompt, RequestOptions.parse(options))

    def _events(
        self, prompt: Prompt, cancel: CancelToken, options: RequestOptions
    ) -> Iterator[Event]:
        return self.pipeline(prompt, options, live=True, cancel=cancel).events()

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
        chooses among the same labels (see :mod:`edge_agent.knowledge.classify`).
        ``options`` (or the keywords): ``mode``, ``threshold``, ``deadline_s``."""
        from .knowledge.classify import classify

        given = {"threshold": threshold, "mode": mode, "deadline_s": deadline_s}
        changes = {key: value for key, value in given.items() if value is not None}
        parsed = (options or RequestOptions()).merged(**changes) if changes else options
        return classify(self.parts, specialist, text, parsed or RequestOptions())

    def feedback(self, prompt: str, right: bool, model: str | None = None) -> Outcome:
        """Record whether ``model``'s (default: ``models.default``) local answer to
        ``prompt`` was right. The outcome memory keeps it; with ``preroute.memory.enabled``
        it moves the pre-route's prediction for similar prompts."""
        if not prompt.strip():
            raise EmptyPromptError("prompt is empty")
        name = model or self.settings.models.default
        self.catalog.get(name)  # UnknownModelError
        return self.memory.add(name, prompt, right, "feedback")

    def models(self) -> list[ModelInfo]:
        loaded = set(self.pool.loaded())
        default = self.settings.models.default
        return [
            ModelInfo(
                name=m.name,
                runtime=m.runtime,
                role=m.role,
                context_length=m.context_length,
                pulled=self.store.is_present(m),
                loaded=m.name in loaded,
                default=m.name == default,
            )
            for m in self.catalog
        ]

    # -- the parts, for commands and tools ----------------------------------------------

    def runtime(self, model: str, progress: Progress = NULL_PROGRESS) -> Runtime:
        """The loaded local model (pulled and loaded on first use)."""
        return self.pool.get(model, progress)

    def confidence_for(self, model: str, runtime: Runtime) -> ModelConfidence:
        """How ``model``'s answers get their confidence (its calibration, checked once)."""
        return self.parts.confidence.for_model(model, runtime)

    def score_local(self, model: str, runtime: Runtime, prompt: str, run: LocalRun) -> Scored:
        """The confidence of a finished local answer (runs the probes its calibration needs)."""
        return self.confidence_for(model, runtime).score(runtime, run.evidence(prompt))

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
    def cache(self) -> SemanticCache | None:
        """The semantic answer cache, opened on first use; None unless ``cache.enabled``."""
        return self.parts.cache.get()

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

    @property
    def embedder(self) -> Embedder:
        return self.parts.embedder

    @property
    def memory(self) -> OutcomeMemory:
        return self.parts.memory

    @property
    def specialists(self) -> SpecialistRegistry:
        return self.parts.specialists

    def close(self) -> None:
        self.parts.close()

    def __enter__(self) -> EdgeAgent:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
