"""The edge agent in-process: answer on this device when confident, escalate otherwise.

One request goes through the pipeline of ARCHITECTURE.md:

1. read the telemetry snapshot and the threshold τ it gives (microseconds, no I/O);
2. pre-route on prompt features: a prompt the local model has no chance on skips it;
3. generate locally, aborting early when the running confidence makes a good answer
   unlikely;
4. keep the local answer when its confidence ≥ τ, else escalate to the broker with the
   draft; when the broker fails, answer with the local draft marked ``local-degraded``.

Every answer carries a :class:`~edge_agent.decision.Decision` saying which path ran and why.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

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

from .budget import EscalationBudget
from .calibrated import ConfidenceInfo, ModelConfidence, Scored, model_confidence
from .decision import AbortInfo, BrokerInfo, Decision, Path, PreRouteInfo, StageTimings
from .escalation import BrokerLink, CloudAnswer, Draft, EscalationFailed, Escalator
from .features import Evidence
from .meters import BrokerHealth, LocalSpeed
from .policy import GATE_BUDGET_SPENT, Threshold, ThresholdPolicy
from .preroute import Prediction, PreRoute
from .settings import EdgeSettings, Mode, state_dir
from .telemetry import (
    ReplaySource,
    TelemetrySampler,
    TelemetrySource,
    TelemetryTrace,
    device_sources,
)

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
    load_s: float  # verifying and loading the model; 0 when it was already loaded
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
    source: Path  # the path that produced the text (see edge_agent.decision)
    confidence: float | None  # of the local answer; None when the local model did not run
    threshold: float  # τ this request was held to
    scorer: str
    model: str  # the model whose text this is (a broker model for cloud answers)
    finish_reason: str
    timings: AnswerTimings | None  # local generation, when it ran
    signals: SignalSummary | None
    decision: Decision

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def chat_messages(prompt: str, system_prompt: str | None) -> list[ChatMessage]:
    """The conversation a prompt becomes; without a system prompt the model's manifest
    supplies its own (the runtime adds it)."""
    messages = [ChatMessage("user", prompt)]
    if system_prompt:
        messages.insert(0, ChatMessage("system", system_prompt))
    return messages


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
) -> LocalRun:
    """Generate to the end, or until ``should_abort(signals so far)`` says stop."""
    parts: list[str] = []
    signals: list[TokenSignals] = []
    pieces: list[str] = []
    aborted_at = None
    with runtime.generate(messages, params) as stream:
        for token in stream:
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


class EdgeAgent:
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
    ) -> None:
        self.settings = settings
        self.catalog = catalog or settings.models.catalog()
        self.store = store or settings.models.store()
        self._pool = RuntimePool(self.catalog, self.store, settings.runtime.load_options())
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
        self.preroute = PreRoute(settings.preroute)
        self._background = background
        if background:
            self.sampler.start()
        self._escalator: BrokerLink | None = broker
        self._broker_missing: str | None = None  # why there is no broker, once known
        self._broker_failed_at: float | None = None  # set when connecting failed: retry later
        self._broker_lock = threading.Lock()

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
            from .pinning import PinStore, discover_broker

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
        prompt: str,
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        mode: Mode | None = None,
        threshold: float | None = None,
        deadline_s: float | None = None,
        on_text: Callable[[str], None] | None = None,
        on_reset: Callable[[str], None] | None = None,
        progress: Progress = NULL_PROGRESS,
    ) -> Answer:
        """Answer ``prompt``. ``mode`` and ``threshold`` override the policy for this request;
        ``deadline_s`` bounds the broker call (default ``escalation.deadline_s``).
        ``on_text`` receives the answer's text as it becomes final (local text streams live
        only when it cannot be replaced); ``on_reset(reason)`` is called when streamed broker
        text is abandoned because the broker failed mid-answer."""
        if not prompt.strip():
            raise EmptyPromptError("prompt is empty")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise InvalidRequestError(f"threshold {threshold} is not in [0, 1]")
        if deadline_s is not None and not deadline_s > 0:
            raise InvalidRequestError(f"deadline_s {deadline_s} must be positive")
        if mode is not None and mode not in ("auto", "local", "cloud"):
            raise InvalidRequestError(f"mode {mode!r} is not one of auto, local, cloud")
        return _Request(
            self,
            prompt,
            model,
            max_tokens,
            mode,
            threshold,
            deadline_s,
            on_text,
            on_reset,
            progress,
        ).run()

    def runtime(self, model: str, progress: Progress = NULL_PROGRESS) -> Runtime:
        """The loaded local model (pulled and loaded on first use)."""
        return self._pool.get(model, progress)

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
        prompt: str,
        model: str | None,
        max_tokens: int | None,
        mode: Mode | None,
        threshold: float | None,
        deadline_s: float | None,
        on_text: Callable[[str], None] | None,
        on_reset: Callable[[str], None] | None,
        progress: Progress,
    ) -> None:
        self.agent = agent
        settings = agent.settings
        self.started = time.perf_counter()
        self.snapshot = agent.sampler.snapshot()
        self.th = agent.policy.evaluate(self.snapshot)
        self.tau = self.th.value if threshold is None else threshold
        self.mode: Mode = mode or settings.policy.mode
        self.decide_ms = (time.perf_counter() - self.started) * 1000
        self.model = model or settings.models.default
        params = settings.generation.sampling()
        if max_tokens is not None:
            params = dataclasses.replace(params, max_tokens=max_tokens)
        self.params = params
        self.messages = chat_messages(prompt, settings.generation.system_prompt)
        self.prompt = prompt
        self.deadline_s = settings.escalation.deadline_s if deadline_s is None else deadline_s
        self.first_abort: AbortInfo | None = None  # kept when a later full run replaces it
        self.skipped_local = False
        self.on_text = on_text
        self.on_reset = on_reset
        self.progress = progress
        self.preroute_ms: float | None = None
        self.prediction: Prediction | None = None
        self.local_ms = 0.0
        self.broker_ms: float | None = None
        self.broker_info: BrokerInfo | None = None
        self.local: _Local | None = None
        self.gate: str | None = None

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
        block, block_is_failure = self._escalation_block()
        self.gate = block
        if block is not None:
            local = self._generate(abort=False, stream=True)
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
        self.prediction = self.agent.preroute.predict(self.prompt)
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

    def _generate(self, *, abort: bool, stream: bool) -> _Local:
        agent = self.agent
        started = time.perf_counter()
        runtime = agent._pool.get(self.model, self.progress)
        load_s = time.perf_counter() - started
        confidence = agent.confidence_for(self.model, runtime)
        should_abort = self._abort_check(confidence) if abort else None
        run = run_local(
            runtime, self.messages, self.params, self.on_text if stream else None, should_abort
        )
        agent.local_speed.record(run.stats.tokens_per_s, run.stats.time_to_first_token_s)
        if run.aborted_at is not None:
            running = confidence.running(run.signals)
            abort_info = AbortInfo(run.aborted_at, running, self._abort_limit())
            info = confidence.running_info(run.signals)
            self.local = _Local(run, running, load_s, abort_info, info)
        else:
            scored = confidence.score(runtime, run.evidence(self.prompt))
            self.local = _Local(run, scored.confidence, load_s, None, scored.info)
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

        try:
            cloud = escalator.escalate(
                self.messages, self.params, draft=draft, deadline_s=self.deadline_s, on_text=on_text
            )
        except EscalationFailed as failure:
            self.broker_ms = (time.perf_counter() - started) * 1000
            self.broker_info = BrokerInfo(
                address=escalator.address,
                attempts=failure.attempts,
                error=failure.reason,
                circuit=escalator.circuit.state,
            )
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
        self.broker_info = BrokerInfo(
            address=escalator.address,
            model=cloud.model,
            models_used=list(cloud.models_used),
            attempts=cloud.attempts,
            rtt_ms=None if cloud.rtt_s is None else cloud.rtt_s * 1000,
            prompt_tokens=cloud.prompt_tokens,
            completion_tokens=cloud.completion_tokens,
            circuit=escalator.circuit.state,
        )
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
            preroute=None
            if prediction is None
            else PreRouteInfo(prediction.confidence, list(prediction.hints), self.skipped_local),
            aborted=self.first_abort or (None if local is None else local.abort),
            broker=self.broker_info,
            timings=StageTimings(
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
