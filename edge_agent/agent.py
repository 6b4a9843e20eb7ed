"""The edge agent in-process: answer on this device when confident, escalate otherwise.

One request goes through the pipeline of ARCHITECTURE.md:

1. read the telemetry snapshot and the threshold τ it gives (microseconds, no I/O);
2. pre-route on prompt features: a prompt the local model has no chance on skips it;
3. generate locally, aborting early when the running confidence makes a good answer
   unlikely;
4. keep the local answer when its confidence ≥ τ, else escalate to the broker with the
   draft; when the broker fails, answer with the local draft marked ``local-degraded``.

Every answer carries a :class:`~edge_agent.request.decision.Decision` saying which path ran and why.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from typing_extensions import Unpack

from ridgeline_core.cancel import CancelToken
from ridgeline_core.client import BrokerClient, TlsOptions
from ridgeline_core.errors import EmptyPromptError, InvalidRequestError, RidgelineError
from ridgeline_core.progress import NULL_PROGRESS, Progress
from ridgeline_core.runtime import (
    ChatMessage,
    GenerationStats,
    Runtime,
    RuntimePool,
    SamplingParams,
    TokenSignals,
)
from ridgeline_core.store import ManifestCatalog, ModelStore

from .confidence.calibrated import ConfidenceInfo, ModelConfidence, Scored, model_confidence
from .confidence.features import Evidence
from .knowledge.embeddings import Embedder
from .knowledge.memory import Outcome, OutcomeMemory, Vectors
from .knowledge.specialists import SpecialistRegistry
from .link.escalation import (
    BrokerLink,
    CloudAnswer,
    Draft,
    EscalationFailed,
    Escalator,
    answered_info,
    failed_info,
)
from .request.decision import (
    AbortInfo,
    BrokerInfo,
    CacheInfo,
    Decision,
    Path,
    PreRouteInfo,
    StageTimings,
    known_fields,
    plain,
)
from .routing.budget import EscalationBudget
from .routing.policy import GATE_BUDGET_SPENT, Threshold, ThresholdPolicy
from .routing.preroute import Prediction, PreRoute
from .sdk.api import Answerer, AskOptions, ModelInfo, Prompt, StreamEvent, threaded_stream
from .settings import EdgeSettings, Mode, state_dir
from .telemetry import (
    ReplaySource,
    TelemetrySampler,
    TelemetrySource,
    TelemetryTrace,
    device_sources,
)
from .telemetry.meters import BrokerHealth, LocalSpeed

if TYPE_CHECKING:
    from .knowledge.cache import CacheHit, SemanticCache
    from .knowledge.classify import Classification

log = logging.getLogger(__name__)

BROKER_RETRY_S = 30.0  # a broker that could not be set up (discovery, TLS files) is retried

__all__ = [
    "Answer",
    "AnswerTimings",
    "EdgeAgent",
    "LocalRun",
    "SignalSummary",
    "chat_messages",
    "run_local",
]


@dataclass(frozen=True)
class AnswerTimings:
    load_s: float  # loading the model, or waiting for a free copy; ~0 when one was ready
    time_to_first_token_s: float | None
    total_s: float  # generation, from request to last token
    tokens_per_s: float | None  # decode speed after the first token
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class SignalSummary:
    tokens: int
    min_prob: float | None
    mean_prob: float | None
    mean_entropy: float | None
    mean_margin: float | None

    @classmethod
    def of(cls, signals: list[TokenSignals]) -> SignalSummary:
        if not signals:
            return cls(0, None, None, None, None)
        n = len(signals)
        return cls(
            tokens=n,
            min_prob=min(s.prob for s in signals),
            mean_prob=sum(s.prob for s in signals) / n,
            mean_entropy=sum(s.entropy for s in signals) / n,
            mean_margin=sum(s.margin for s in signals) / n,
        )


@dataclass(frozen=True)
class Answer:
    text: str
    source: Path  # the path that produced the text (see edge_agent.request.decision)
    confidence: float | None  # of the local answer; None when the local model did not run
    threshold: float  # τ this request was held to
    scorer: str
    model: str  # the model whose text this is (a broker model for cloud answers)
    finish_reason: str
    timings: AnswerTimings | None  # local generation, when it ran
    signals: SignalSummary | None
    decision: Decision

    def to_dict(self) -> dict[str, Any]:
        return plain(self)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Answer:
        """The answer :meth:`to_dict` wrote (what a daemon sends an ``EdgeClient``)."""
        fields = known_fields(cls, data)
        if fields.get("timings") is not None:
            fields["timings"] = AnswerTimings(**known_fields(AnswerTimings, fields["timings"]))
        if fields.get("signals") is not None:
            fields["signals"] = SignalSummary(**known_fields(SignalSummary, fields["signals"]))
        fields["decision"] = Decision.from_dict(fields["decision"])
        return cls(**fields)


def chat_messages(prompt: str, system_prompt: str | None) -> list[ChatMessage]:
    """The conversation a prompt becomes; without a system prompt the model's manifest
    supplies its own (the runtime adds it)."""
    messages = [ChatMessage("user", prompt)]
    if system_prompt:
        messages.insert(0, ChatMessage("system", system_prompt))
    return messages


ROLES = ("system", "user", "assistant")


def conversation(prompt: Prompt, system_prompt: str | None) -> tuple[list[ChatMessage], str]:
    """The messages to answer and the question they end with.

    ``prompt`` is one user message, or a whole chat (``ChatMessage`` objects or
    ``{"role", "content"}`` mappings) ending with the user's turn. A chat that brings its
    own system message keeps it; otherwise ``system_prompt`` (or the manifest's) is added.
    The question, the last user message, is what confidence features and pre-route read.
    """
    if isinstance(prompt, str):
        if not prompt.strip():
            raise EmptyPromptError("prompt is empty")
        return chat_messages(prompt, system_prompt), prompt
    messages: list[ChatMessage] = []
    for index, item in enumerate(prompt):
        role: Any
        content: Any
        if isinstance(item, ChatMessage):
            role, content = item.role, item.content
        elif isinstance(item, Mapping):
            role, content = item.get("role"), item.get("content")
        else:
            raise InvalidRequestError(f"message {index} is not a chat message")
        if role not in ROLES:
            raise InvalidRequestError(
                f"message {index} has role {role!r}; roles are {', '.join(ROLES)}"
            )
        if not isinstance(content, str):
            raise InvalidRequestError(f"message {index} has no text content")
        messages.append(ChatMessage(role, content))
    if not messages:
        raise EmptyPromptError("the conversation has no messages")
    if messages[-1].role != "user":
        raise InvalidRequestError("the last message must be the user's")
    question = messages[-1].content
    if not question.strip():
        raise EmptyPromptError("the last user message is empty")
    if system_prompt and not any(m.role == "system" for m in messages):
        messages.insert(0, ChatMessage("system", system_prompt))
    return messages, question


@dataclass(frozen=True)
class LocalRun:
    text: str
    signals: list[TokenSignals]  # one per answer token
    stats: GenerationStats
    aborted_at: int | None = None  # answer tokens generated when should_abort said stop
    pieces: list[str] = dataclasses.field(default_factory=list)  # text of each token

    def evidence(self, prompt: str) -> Evidence:
        """What the confidence features read (probes not yet run)."""
        return Evidence(prompt, tuple(self.pieces), tuple(self.signals), self.stats.eog_signals)


def run_local(
    runtime: Runtime,
    messages: list[ChatMessage],
    params: SamplingParams,
    on_text: Callable[[str], None] | None = None,
    should_abort: Callable[[list[TokenSignals]], bool] | None = None,
    cancel: CancelToken | None = None,
) -> LocalRun:
    """Generate to the end, or until ``should_abort(signals so far)`` says stop.

    A cancelled ``cancel`` stops the generation at the next token (RequestCancelledError)."""
    parts: list[str] = []
    signals: list[TokenSignals] = []
    pieces: list[str] = []
    aborted_at = None
    with runtime.generate(messages, params) as stream:
        for token in stream:
            if cancel is not None:
                cancel.check()
            if token.signals is not None:
                signals.append(token.signals)
                pieces.append(token.text)
            elif pieces:  # text held back and released at the end belongs to the last token
                pieces[-1] += token.text
            if token.text:
                parts.append(token.text)
                if on_text is not None:
                    on_text(token.text)
            if should_abort is not None and token.signals is not None and should_abort(signals):
                aborted_at = len(signals)
                break
    return LocalRun("".join(parts), signals, stream.stats, aborted_at, pieces)


@dataclass
class _Local:
    """One local generation's outcome, as a request sees it."""

    run: LocalRun
    confidence: float
    load_s: float
    abort: AbortInfo | None
    info: ConfidenceInfo


class EdgeAgent(Answerer):
    """Answers prompts on the device and escalates to the broker when that is worth it.

    Loads each model once, on first use; connects to the broker on the first escalation.
    ``close()`` (or ``with``) stops the telemetry sampler and the broker prober.
    """

    def __init__(
        self,
        settings: EdgeSettings,
        *,
        catalog: ManifestCatalog | None = None,
        store: ModelStore | None = None,
        sampler: TelemetrySampler | None = None,
        broker: BrokerLink | None = None,
        background: bool = True,
        parallel: int = 1,
        pool: RuntimePool | None = None,
    ) -> None:
        """``parallel``: copies of each model that generate at once (threads are split
        between them). ``pool``: share loaded models with another agent (a daemon
        reloading its settings); the agent then leaves closing it to the caller."""
        self.settings = settings
        self.catalog = catalog or settings.models.catalog()
        self.store = store or settings.models.store()
        self._owns_pool = pool is None
        self._pool = pool or RuntimePool(
            self.catalog,
            self.store,
            settings.runtime.load_options(parallel),
            instances=parallel,
        )
        self._scorer_name = settings.confidence.scorer
        self._confidence: dict[str, ModelConfidence] = {}
        self._confidence_lock = threading.Lock()
        self.local_speed = LocalSpeed(settings.telemetry.speed_alpha)
        self.broker_health = BrokerHealth(settings.telemetry.rtt_alpha)
        budget_file = settings.budget.state_file or state_dir() / "budget.json"
        self.budget = EscalationBudget(settings.budget, budget_file)
        self.policy = ThresholdPolicy(settings.policy)
        self.sampler = sampler or self._make_sampler()
        self.sampler.sample_now()
        self.sampler.on_sample = self.policy.evaluate  # τ follows the device between requests
        self._background = background
        if background:
            self.sampler.start()
        self.embedder = Embedder(settings.embeddings, self.catalog, self.store)
        # The outcome memory reads its file and embeds its prompts on first use, not here.
        remembered = settings.preroute.memory
        self.memory = OutcomeMemory(
            remembered, self.embedder.embed, remembered.path or state_dir() / "outcome-memory.jsonl"
        )
        self.preroute = PreRoute(settings.preroute, self.memory if remembered.enabled else None)
        self.specialists = SpecialistRegistry(
            settings.specialists.dir or state_dir() / "specialists", self.store, self.embedder
        )
        self._cache: SemanticCache | None = None
        self._cache_lock = threading.Lock()
        self._escalator: BrokerLink | None = broker
        self._broker_missing: str | None = None  # why there is no broker, once known
        self._broker_failed_at: float | None = None  # set when connecting failed: retry later
        self._broker_lock = threading.Lock()

    @classmethod
    def from_config(cls, config_file: pathlib.Path | None = None, **kwargs: Any) -> EdgeAgent:
        """An agent with the settings ``edge-agent`` would use: ``config_file`` (default
        ``$RIDGELINE_EDGE_CONFIG`` or the user's edge.toml), then ``RIDGELINE_EDGE_*``."""
        from .settings import load_edge_settings

        loaded = load_edge_settings(config_file=config_file, env=os.environ)
        return cls(loaded.settings, **kwargs)

    def _make_sampler(self) -> TelemetrySampler:
        t = self.settings.telemetry
        measured: list[TelemetrySource] = [self.local_speed, self.broker_health, self.budget]
        if t.trace is not None:
            replay = ReplaySource(TelemetryTrace.load(t.trace))
            return TelemetrySampler(
                [], measured=measured, overrides=replay, interval_s=t.interval_s
            )
        return TelemetrySampler(
            device_sources(t.sources), measured=measured, interval_s=t.interval_s
        )

    # -- the broker link -------------------------------------------------------------

    def broker(self) -> BrokerLink | None:
        """The broker link, connected on first use; None when there is none (see
        :attr:`broker_missing`)."""
        with self._broker_lock:
            failed_at = self._broker_failed_at
            if failed_at is not None and time.monotonic() - failed_at > BROKER_RETRY_S:
                self._broker_missing = self._broker_failed_at = None  # try again
            if self._escalator is None and self._broker_missing is None:
                try:
                    self._escalator = self._connect()
                except RidgelineError as exc:
                    self._broker_missing = f"broker unusable: {exc}"
                    self._broker_failed_at = time.monotonic()
            return self._escalator

    @property
    def broker_missing(self) -> str | None:
        return self._broker_missing

    @property
    def broker_failed(self) -> bool:
        """True when a broker is configured (or discovery is on) but could not be used."""
        return self._broker_failed_at is not None

    def _connect(self) -> BrokerLink | None:
        b = self.settings.broker
        address, tls = b.address, None
        if not address and b.discover:
            from .link.pinning import PinStore, discover_broker

            pins = PinStore(b.pins_file or state_dir() / "brokers.json")
            found = discover_broker(
                timeout_s=b.discover_timeout_s,
                enrolled=b.enrolled,
                pins=pins,
                trust_on_first_use=b.trust_on_first_use,
                interfaces=b.discover_interfaces or None,
            )
            if found is None:
                raise RidgelineError("no trusted broker was discovered on the local network")
            address = found.address
            tls = TlsOptions(
                ca_pem=found.ca_pem,
                cert_file=b.cert_file,
                key_file=b.key_file,
                server_name=found.server_name,
            )
        elif not address:
            self._broker_missing = "no broker is configured (broker.address)"
            return None
        elif not b.plaintext:
            tls = TlsOptions(b.ca_file, b.cert_file, b.key_file, b.server_name)
        client = BrokerClient(
            address,
            token=None if b.plaintext else b.read_token(),
            tls=tls,
            plaintext=b.plaintext and tls is None,
            timeout_s=self.settings.escalation.deadline_s,
        )
        escalator = Escalator(
            client,
            self.settings.escalation,
            self.broker_health,
            address=address,
            model=b.model,
            device_id=b.device_id,
            on_change=self.sampler.refresh,
        )
        if self._background:
            escalator.start_probing()
        return escalator

    # -- answering -------------------------------------------------------------------

    def ask(
        self,
        prompt: Prompt,
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
        mode: Mode | None = None,
        threshold: float | None = None,
        deadline_s: float | None = None,
        private: bool = False,
        on_text: Callable[[str], None] | None = None,
        on_reset: Callable[[str], None] | None = None,
        progress: Progress = NULL_PROGRESS,
        cancel: CancelToken | None = None,
    ) -> Answer:
        """Answer ``prompt`` (a question, or a chat ending with the user's turn; see
        :func:`conversation`).

        ``max_tokens``, ``temperature``, ``top_p``, ``seed`` and ``stop`` override
        ``generation`` settings; ``mode`` and ``threshold`` override the policy for this
        request; ``deadline_s`` bounds the broker call (default ``escalation.deadline_s``).
        ``private`` keeps the prompt and its answer out of the semantic answer cache.
        ``on_text`` receives the answer's text as it becomes final (local text streams live
        only when it cannot be replaced); ``on_reset(reason)`` is called when streamed broker
        text is abandoned because the broker failed mid-answer. Cancelling ``cancel`` stops
        the work at the next token or broker event with RequestCancelledError."""
        messages, question, params = self._checked(
            prompt, model, max_tokens, temperature, top_p, seed, stop, mode, threshold, deadline_s
        )
        return _Request(
            self,
            messages,
            question,
            model,
            params,
            mode,
            threshold,
            deadline_s,
            private,
            on_text,
            on_reset,
            progress,
            cancel,
        ).run()

    def classify(
        self,
        specialist: str,
        text: str,
        *,
        threshold: float | None = None,
        mode: Mode | None = None,
        deadline_s: float | None = None,
    ) -> Classification:
        """The specialist's label for ``text``; below its threshold the broker's model
        chooses among the same labels (see :mod:`edge_agent.knowledge.classify`)."""
        from .knowledge.classify import classify

        return classify(
            self, specialist, text, threshold=threshold, mode=mode, deadline_s=deadline_s
        )

    @property
    def cache(self) -> SemanticCache | None:
        """The semantic answer cache, opened on first use; None unless ``cache.enabled``."""
        c = self.settings.cache
        if not c.enabled:
            return None
        with self._cache_lock:
            if self._cache is None:
                from .knowledge.cache import SemanticCache

                self._cache = SemanticCache(
                    c.path or state_dir() / "answer-cache.sqlite",
                    self.embedder.embed_one,
                    encoder=f"{self.embedder.name}/{self.embedder.variant}",
                    similarity=c.similarity,
                    ttl_s=c.ttl_s,
                    max_entries=c.max_entries,
                )
            return self._cache

    def feedback(self, prompt: str, right: bool, model: str | None = None) -> Outcome:
        """Record whether ``model``'s (default: ``models.default``) local answer to
        ``prompt`` was right. The outcome memory keeps it; with ``preroute.memory.enabled``
        it moves the pre-route's prediction for similar prompts."""
        if not prompt.strip():
            raise EmptyPromptError("prompt is empty")
        name = model or self.settings.models.default
        self.catalog.get(name)  # UnknownModelError
        return self.memory.add(name, prompt, right, "feedback")

    def check(self, prompt: Prompt, **options: Unpack[AskOptions]) -> None:
        """Raise what :meth:`ask` would raise for a malformed request, without doing any
        work (a daemon answers 400 before it admits the request)."""
        self._checked(
            prompt,
            options.get("model"),
            options.get("max_tokens"),
            options.get("temperature"),
            options.get("top_p"),
            options.get("seed"),
            options.get("stop"),
            options.get("mode"),
            options.get("threshold"),
            options.get("deadline_s"),
        )

    def _checked(
        self,
        prompt: Prompt,
        model: str | None,
        max_tokens: int | None,
        temperature: float | None,
        top_p: float | None,
        seed: int | None,
        stop: Sequence[str] | None,
        mode: str | None,
        threshold: float | None,
        deadline_s: float | None,
    ) -> tuple[list[ChatMessage], str, SamplingParams]:
        messages, question = conversation(prompt, self.settings.generation.system_prompt)
        if model is not None:
            self.catalog.get(model)  # UnknownModelError, or ManifestError for a path-like name
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise InvalidRequestError(f"threshold {threshold} is not in [0, 1]")
        if deadline_s is not None and not deadline_s > 0:
            raise InvalidRequestError(f"deadline_s {deadline_s} must be positive")
        if mode is not None and mode not in ("auto", "local", "cloud"):
            raise InvalidRequestError(f"mode {mode!r} is not one of auto, local, cloud")
        params = _sampling(
            self.settings.generation.sampling(), max_tokens, temperature, top_p, seed, stop
        )
        return messages, question, params

    def _events(
        self, prompt: Prompt, cancel: CancelToken, options: AskOptions
    ) -> Iterator[StreamEvent]:
        def run(on_text: Callable[[str], None], on_reset: Callable[[str], None]) -> Answer:
            return self.ask(prompt, on_text=on_text, on_reset=on_reset, cancel=cancel, **options)

        return threaded_stream(run, cancel)

    def models(self) -> list[ModelInfo]:
        loaded = set(self._pool.loaded())
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

    def runtime(self, model: str, progress: Progress = NULL_PROGRESS) -> Runtime:
        """The loaded local model (pulled and loaded on first use)."""
        return self._pool.get(model, progress)

    @property
    def pool(self) -> RuntimePool:
        """The loaded models (a daemon unloads idle ones through it)."""
        return self._pool

    def confidence_for(self, model: str, runtime: Runtime) -> ModelConfidence:
        """How ``model``'s answers get their confidence (its calibration, checked once)."""
        with self._confidence_lock:
            found = self._confidence.get(model)
            if found is None:
                c = self.settings.confidence
                found = model_confidence(
                    self.catalog.get(model),
                    runtime,
                    scorer_name=c.scorer,
                    use_calibration=c.calibrated,
                    calibration_file=c.calibration_file,
                    system_prompt=self.settings.generation.system_prompt,
                )
                self._confidence[model] = found
            return found

    def score_local(self, model: str, runtime: Runtime, prompt: str, run: LocalRun) -> Scored:
        """The confidence of a finished local answer (runs the probes its calibration needs)."""
        return self.confidence_for(model, runtime).score(runtime, run.evidence(prompt))

    def decide_threshold(self) -> Threshold:
        """τ for the current telemetry (what ``edge-agent telemetry`` prints)."""
        return self.policy.evaluate(self.sampler.snapshot())

    def close(self) -> None:
        self.sampler.close()
        if self._escalator is not None:
            self._escalator.close()
        with self._cache_lock:
            if self._cache is not None:
                self._cache.close()
                self._cache = None
        self.specialists.close()
        self.embedder.close()
        if self._owns_pool:
            self._pool.close()

    def __enter__(self) -> EdgeAgent:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _Request:
    """One request through the pipeline; holds its timings and builds its decision."""

    def __init__(
        self,
        agent: EdgeAgent,
        messages: list[ChatMessage],
        question: str,
        model: str | None,
        params: SamplingParams,
        mode: Mode | None,
        threshold: float | None,
        deadline_s: float | None,
        private: bool,
        on_text: Callable[[str], None] | None,
        on_reset: Callable[[str], None] | None,
        progress: Progress,
        cancel: CancelToken | None,
    ) -> None:
        self.agent = agent
        self.private = private
        settings = agent.settings
        self.started = time.perf_counter()
        self.snapshot = agent.sampler.snapshot()
        self.th = agent.policy.evaluate(self.snapshot)
        self.tau = self.th.value if threshold is None else threshold
        self.mode: Mode = mode or settings.policy.mode
        self.decide_ms = (time.perf_counter() - self.started) * 1000
        self.model = model or settings.models.default
        self.params = params
        self.messages = messages
        self.prompt = question
        self.deadline_s = settings.escalation.deadline_s if deadline_s is None else deadline_s
        self.first_abort: AbortInfo | None = None  # kept when a later full run replaces it
        self.skipped_local = False
        self.on_text = on_text
        self.on_reset = on_reset
        self.progress = progress
        self.cancel = cancel
        self.preroute_ms: float | None = None
        self.prediction: Prediction | None = None
        self.local_ms = 0.0
        self.broker_ms: float | None = None
        self.broker_info: BrokerInfo | None = None
        self.local: _Local | None = None
        self.gate: str | None = None
        self.cache_ms: float | None = None
        self.cache_info: CacheInfo | None = None
        self.vector: Vectors | None = None  # the prompt's embedding (cache, pre-route memory)

    # The escalation options, checked once per request before any work.
    def _escalation_block(self) -> tuple[str | None, bool]:
        """(why escalation is impossible, whether that is a failure) or (None, False)."""
        if self.mode == "local":
            return "mode local never escalates", False
        escalator = self.agent.broker()
        if escalator is None:
            return self.agent.broker_missing or "no broker", self.agent.broker_failed
        if self.th.gate == GATE_BUDGET_SPENT:
            return self.th.gate, False
        ok, why = escalator.available()
        if not ok:
            return why, True
        # A half-open circuit wants one real call to find out: this request may be it.
        if self.th.gate is not None and why != "half-open":
            return self.th.gate, True
        return None, False

    def run(self) -> Answer:
        if self.private or self.mode == "local" or not self.agent.settings.cache.enabled:
            return self._route()
        scope = self._cache_scope()
        cache, vector, hit = None, None, None
        t = time.perf_counter()
        try:
            cache = self.agent.cache
            if cache is not None:
                vector = self.vector = self.agent.embedder.embed_one(self.prompt)
                hit = cache.lookup(self.prompt, scope, vector=vector)
        # The cache must never stop an answer: whatever the store, the encoder or ONNX
        # Runtime raised, the request goes on without it.
        except Exception as exc:
            log.warning("semantic cache unavailable: %s: %s", type(exc).__name__, exc)
            cache, hit = None, None
        self.cache_ms = (time.perf_counter() - t) * 1000
        cloud_only = self.mode == "cloud"  # mode cloud wants a broker's answer, cached or not
        if hit is not None and cloud_only and hit.answer.get("source") == "local":
            hit = None
        if hit is not None:
            return self._cached_answer(hit)
        if cache is None:
            return self._route()
        answer = self._route()
        if vector is not None and self._worth_caching(answer):
            stored = {"text": answer.text, "model": answer.model, "source": answer.source}
            try:
                cache.put(self.prompt, scope, stored, vector=vector)
            except Exception as exc:  # the answer is already made
                log.warning("could not store the answer in the semantic cache: %s", exc)
        return answer

    def _cache_scope(self) -> str:
        """Answers are shared between requests with the same model, the same conversation
        before the last question (the system prompt included) and the same options that
        shape an answer's text (length, stop sequences, sampling)."""
        before = [(m.role, m.content) for m in self.messages[:-1]]
        p = self.params
        shape = [p.max_tokens, list(p.stop), p.temperature, p.top_p, p.seed]
        return hashlib.sha256(json.dumps([self.model, before, shape]).encode()).hexdigest()

    def _worth_caching(self, answer: Answer) -> bool:
        if answer.finish_reason not in ("stop", "stop_sequence"):
            return False  # cut at max_tokens, or cancelled: not an answer to reuse
        if answer.source in ("cloud", "skipped-local"):
            return True
        return answer.source == "local" and self.agent.settings.cache.store == "all"

    def _cached_answer(self, hit: CacheHit) -> Answer:
        stored = hit.answer
        text, model = str(stored.get("text", "")), str(stored.get("model", ""))
        self.cache_info = CacheInfo(
            similarity=hit.similarity,
            age_s=hit.age_s,
            prompt=hit.prompt,
            source=str(stored.get("source", "")),
            threshold=self.agent.settings.cache.similarity,
        )
        self._emit(text)
        reason = (
            f"a cached answer to a similar prompt (similarity {hit.similarity:.3f} ≥ "
            f"{self.agent.settings.cache.similarity:.2f}, {hit.age_s:.0f} s old)"
        )
        return Answer(
            text=text,
            source="cache",
            confidence=None,
            threshold=self.tau,
            scorer="cache",
            model=model,
            finish_reason="stop",
            timings=None,
            signals=None,
            decision=self._decision("cache", reason),
        )

    def _route(self) -> Answer:
        block, block_is_failure = self._escalation_block()
        self.gate = block
        if block is not None:
            # The route no longer depends on the confidence unless a broker that should
            # have answered is failing (local vs local-degraded): skip the probes then.
            deciding = self.mode == "auto" and block_is_failure
            local = self._generate(abort=False, stream=True, probes=deciding)
            wanted = self.mode == "cloud" or local.confidence < self.tau
            if wanted and block_is_failure:
                return self._local_answer(
                    "local-degraded", f"{self._why_escalate(local)}, but {block}"
                )
            if wanted:
                return self._local_answer("local", f"{self._why_escalate(local)}, but {block}")
            return self._local_answer("local", self._why_local(local))
        if self.mode == "cloud":
            return self._escalate(None, "skipped", "mode cloud always escalates")
        t = time.perf_counter()
        self.prediction = self._predict()
        skip = self.agent.preroute.skips(self.prediction, self.tau)
        self.preroute_ms = (time.perf_counter() - t) * 1000
        if skip:
            self.skipped_local = True
            margin = self.agent.settings.preroute.skip_margin
            why = f"pre-route {self.prediction.describe()} < τ {self.tau:.2f} - {margin:.2f}"
            return self._escalate(None, "skipped", why)
        local = self._generate(abort=True, stream=False)
        if local.abort is not None:
            a = local.abort
            why = (
                f"early abort at token {a.at_token}: running confidence "
                f"{a.running_confidence:.2f} < {a.limit:.2f}"
            )
            return self._escalate(local, "aborted", why)
        if local.confidence >= self.tau:
            self._emit(local.run.text)
            return self._local_answer("local", self._why_local(local))
        return self._escalate(local, "ran", self._why_escalate(local))

    def _predict(self) -> Prediction:
        """The pre-route's prediction; with the outcome memory on, from the prompt's
        embedding too (the one the cache made, if any). The memory is advice: when the
        embedder or the memory fails, the rules predict alone."""
        preroute = self.agent.preroute
        if preroute.memory is None or self.private:  # a private prompt is never embedded
            return preroute.predict(self.prompt)
        try:
            if self.vector is None:
                self.vector = self.agent.embedder.embed_one(self.prompt)
            return preroute.predict(self.prompt, self.vector, self.model)
        except Exception as exc:  # whatever the embedder raised, an answer still comes
            log.warning("pre-route memory unavailable: %s: %s", type(exc).__name__, exc)
            return preroute.predict(self.prompt)

    def _why_local(self, local: _Local) -> str:
        if self.mode == "local":
            return "mode local never escalates"
        return f"confidence {local.confidence:.2f} ≥ τ {self.tau:.2f}"

    def _why_escalate(self, local: _Local) -> str:
        if self.mode == "cloud":
            return "mode cloud always escalates"
        return f"confidence {local.confidence:.2f} < τ {self.tau:.2f}"

    def _emit(self, text: str) -> None:
        if self.on_text is not None and text:
            self.on_text(text)

    def _generate(self, *, abort: bool, stream: bool, probes: bool = True) -> _Local:
        agent = self.agent
        if self.cancel is not None:
            self.cancel.check()
        started = time.perf_counter()
        with agent.pool.lease(self.model, self.progress, self.cancel) as runtime:
            load_s = time.perf_counter() - started
            confidence = agent.confidence_for(self.model, runtime)
            should_abort = self._abort_check(confidence) if abort else None
            run = run_local(
                runtime,
                self.messages,
                self.params,
                self.on_text if stream else None,
                should_abort,
                self.cancel,
            )
            agent.local_speed.record(run.stats.tokens_per_s, run.stats.time_to_first_token_s)
            if run.aborted_at is not None:
                running = confidence.running(run.signals)
                abort_info = AbortInfo(run.aborted_at, running, self._abort_limit())
                info = confidence.running_info(run.signals)
                self.local = _Local(run, running, load_s, abort_info, info)
            elif probes or self.agent.settings.confidence.probes == "always":
                if self.cancel is not None:
                    self.cancel.check()
                scored = confidence.score(runtime, run.evidence(self.prompt))
                self.local = _Local(run, scored.confidence, load_s, None, scored.info)
            else:
                info = confidence.running_info(run.signals)
                why = f"probes skipped: {self.gate or 'the route does not depend on it'}"
                info = dataclasses.replace(info, note=f"{info.note}; {why}" if info.note else why)
                self.local = _Local(run, confidence.running(run.signals), load_s, None, info)
        self.local_ms += (time.perf_counter() - started) * 1000
        agent.sampler.refresh()
        return self.local

    def _abort_limit(self) -> float:
        return self.tau - self.agent.settings.abort.margin

    def _abort_check(
        self, confidence: ModelConfidence
    ) -> Callable[[list[TokenSignals]], bool] | None:
        s = self.agent.settings.abort
        if not s.enabled:
            return None
        limit = self._abort_limit()
        running = confidence.running
        return lambda signals: len(signals) >= s.min_tokens and running(signals) < limit

    def _escalate(self, local: _Local | None, local_state: str, why: str) -> Answer:
        escalator = self.agent.broker()
        assert escalator is not None  # checked by _escalation_block
        draft = None
        if local is not None:
            draft = Draft(
                local.run.text, local.confidence, self.model, local.run.stats.completion_tokens
            )
        started = time.perf_counter()
        streamed: list[str] = []
        # Broker text streams live only to a caller that can be told to drop it again.
        live = self.on_reset is not None

        def on_text(text: str) -> None:
            streamed.append(text)
            if live:
                self._emit(text)

        if self.cancel is not None:
            self.cancel.check()
        try:
            cloud = escalator.escalate(
                self.messages,
                self.params,
                draft=draft,
                deadline_s=self.deadline_s,
                on_text=on_text,
                cancel=self.cancel,
            )
        except EscalationFailed as failure:
            self.broker_ms = (time.perf_counter() - started) * 1000
            self.broker_info = failed_info(escalator, failure)
            if streamed and self.on_reset is not None:
                self.on_reset(f"the broker failed mid-answer ({failure.reason})")
            if local is None or local.abort is not None:
                # No finished local answer: generate one now, to the end.
                abort = None if local is None else local.abort
                local = self._generate(abort=False, stream=False)
                self.first_abort = abort
            self._emit(local.run.text)
            return self._local_answer(
                "local-degraded", f"{why}; escalation failed ({failure.reason})"
            )
        self.broker_ms = (time.perf_counter() - started) * 1000
        if not live:
            self._emit(cloud.text)
        self.agent.budget.record(cloud.prompt_tokens + cloud.completion_tokens)
        self.agent.sampler.refresh()
        self.broker_info = answered_info(escalator, cloud)
        path: Path = (
            "skipped-local" if local_state == "skipped" and self.mode != "cloud" else "cloud"
        )
        return self._cloud_answer(cloud, path, f"{why}: escalated to {cloud.model}")

    def _decision(self, path: Path, reason: str) -> Decision:
        local = self.local
        prediction = self.prediction
        return Decision(
            path=path,
            mode=self.mode,
            reason=reason,
            confidence=None if local is None else local.confidence,
            confidence_info=None if local is None else local.info,
            threshold=self.tau,
            threshold_raw=self.th.raw,
            threshold_reason=self.th.reason(),
            threshold_terms=[
                {"name": t.name, "side": t.side, "delta": t.delta, "why": t.why}
                for t in self.th.terms
            ],
            telemetry=self.snapshot.values(),
            telemetry_sources=list(self.snapshot.sources),
            gate=self.gate,
            preroute=None if prediction is None else _preroute_info(prediction, self.skipped_local),
            aborted=self.first_abort or (None if local is None else local.abort),
            broker=self.broker_info,
            cache=self.cache_info,
            timings=StageTimings(
                cache_ms=self.cache_ms,
                decide_ms=self.decide_ms,
                preroute_ms=self.preroute_ms,
                local_ms=self.local_ms if local is not None else None,
                broker_ms=self.broker_ms,
                total_ms=(time.perf_counter() - self.started) * 1000,
            ),
        )

    def _local_answer(self, path: Path, reason: str) -> Answer:
        local = self.local
        assert local is not None
        stats = local.run.stats
        return Answer(
            text=local.run.text,
            source=path,
            confidence=local.confidence,
            threshold=self.tau,
            scorer=_scorer_label(local.info),
            model=self.model,
            finish_reason=stats.finish_reason.value if stats.finish_reason else "unknown",
            timings=_timings(local),
            signals=SignalSummary.of(local.run.signals),
            decision=self._decision(path, reason),
        )

    def _cloud_answer(self, cloud: CloudAnswer, path: Path, reason: str) -> Answer:
        local = self.local
        return Answer(
            text=cloud.text,
            source=path,
            confidence=None if local is None else local.confidence,
            threshold=self.tau,
            scorer=self.agent._scorer_name if local is None else _scorer_label(local.info),
            model=cloud.model,
            finish_reason=cloud.finish_reason,
            timings=None if local is None else _timings(local),
            signals=None if local is None else SignalSummary.of(local.run.signals),
            decision=self._decision(path, reason),
        )


def _sampling(
    base: SamplingParams,
    max_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    seed: int | None,
    stop: Sequence[str] | None,
) -> SamplingParams:
    """``base`` with a request's overrides, each checked against the settings' bounds."""
    changes: dict[str, Any] = {}
    if max_tokens is not None:
        if not 1 <= max_tokens <= 32768:
            raise InvalidRequestError(f"max_tokens {max_tokens} is not in [1, 32768]")
        changes["max_tokens"] = max_tokens
    if temperature is not None:
        if not 0.0 <= temperature <= 2.0:
            raise InvalidRequestError(f"temperature {temperature} is not in [0, 2]")
        changes["temperature"] = temperature
    if top_p is not None:
        if not 0.0 < top_p <= 1.0:
            raise InvalidRequestError(f"top_p {top_p} is not in (0, 1]")
        changes["top_p"] = top_p
    if seed is not None:
        if not 0 <= seed <= 2**32 - 1:
            raise InvalidRequestError(f"seed {seed} is not in [0, 2**32 - 1]")
        changes["seed"] = seed
    if stop is not None:
        if not isinstance(stop, (list, tuple)) or not all(isinstance(x, str) and x for x in stop):
            raise InvalidRequestError("stop must be a list of non-empty strings")
        if len(stop) > 8:
            raise InvalidRequestError(f"stop has {len(stop)} sequences; at most 8")
        changes["stop"] = (*base.stop, *stop)
    return dataclasses.replace(base, **changes) if changes else base


def _preroute_info(prediction: Prediction, skipped_local: bool) -> PreRouteInfo:
    memory = prediction.memory
    if memory is None:
        return PreRouteInfo(prediction.confidence, list(prediction.hints), skipped_local)
    return PreRouteInfo(
        prediction.confidence,
        list(prediction.hints),
        skipped_local,
        rules=prediction.rules,
        memory=memory.probability,
        memory_support=memory.support,
        memory_neighbours=memory.neighbours,
    )


def _scorer_label(info: ConfidenceInfo) -> str:
    return f"calibrated:{info.method}" if info.calibrated else info.method


def _timings(local: _Local) -> AnswerTimings:
    stats = local.run.stats
    return AnswerTimings(
        load_s=local.load_s,
        time_to_first_token_s=stats.time_to_first_token_s,
        total_s=stats.total_s,
        tokens_per_s=stats.tokens_per_s,
        prompt_tokens=stats.prompt_tokens,
        completion_tokens=stats.completion_tokens,
    )
