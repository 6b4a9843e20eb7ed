"""Edge agent settings: one typed tree, parsed once at the entry point.

Sources, lowest precedence first: defaults, the TOML file
(``--config FILE``, ``$RIDGELINE_EDGE_CONFIG`` or ``<user config dir>/edge.toml``),
environment variables ``RIDGELINE_EDGE_<SECTION>__<KEY>``, command-line flags.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Annotated, Literal

import platformdirs
from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator

from ridgeline_core.config import Section, settings_loader
from ridgeline_core.errors import ConfigError
from ridgeline_core.runtime import LoadOptions, SamplingParams
from ridgeline_core.store import ModelsSettings
from ridgeline_core.transport import is_loopback, split_host_port

from .confidence.scorers import scorer_names

__all__ = [
    "ENV_PREFIX",
    "AbortSettings",
    "BrokerSettings",
    "BudgetSettings",
    "CacheSettings",
    "DaemonSettings",
    "EdgeSettings",
    "EmbeddingSettings",
    "Escalate",
    "EscalationSettings",
    "KnowledgeSettings",
    "MemorySettings",
    "Mode",
    "PolicySettings",
    "PreRouteSettings",
    "SpecialistSettings",
    "TaskHint",
    "TelemetrySettings",
    "load_edge_settings",
    "state_dir",
]

Mode = Literal["auto", "local", "cloud"]


def state_dir() -> Path:
    """Where the agent keeps small state files (escalation budget, pinned brokers)."""
    return Path(platformdirs.user_state_dir("ridgeline"))


ENV_PREFIX = "RIDGELINE_EDGE_"


class RuntimeSettings(Section):
    threads: int | None = Field(
        default=None, ge=1, description="decode threads (default: physical cores)"
    )
    threads_batch: int | None = Field(default=None, ge=1, description="prompt threads")
    adaptive_threads: bool = Field(
        default=True,
        description="per request, leave the cores other processes keep busy (telemetry "
        "cpu_load) to them: fewer threads than loaded with, never more",
    )
    n_ctx: int = Field(
        default=2048, ge=256, le=1 << 20, description="context length in tokens (llama.cpp: ≥ 256)"
    )
    n_batch: int | None = Field(
        default=None,
        ge=1,
        description="prompt tokens per forward pass (default: 64 on the CPU, 512 with GPU layers)",
    )
    n_gpu_layers: int = Field(
        default=0, ge=-1, description="layers offloaded to a GPU (-1: all; CUDA/Metal builds)"
    )

    def load_options(self, parallel: int = 1) -> LoadOptions:
        """How to load a model of which ``parallel`` copies generate at once: unless
        ``threads`` is set, the physical cores are split between the copies."""
        threads = self.threads
        if threads is None and parallel > 1:
            from ridgeline_core.runtime.llama_cpp import default_threads

            threads = max(1, default_threads() // parallel)
        return LoadOptions(
            n_ctx=self.n_ctx,
            n_threads=threads,
            n_threads_batch=self.threads_batch or threads,
            n_batch=self.n_batch,
            n_gpu_layers=self.n_gpu_layers,
        )


class GenerationSettings(Section):
    max_tokens: int = Field(default=256, ge=1, le=32768, description="answer length limit")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0 is greedy")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=40, ge=0, description="0 disables top-k")
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1, description="fixed sampling seed")
    stop: list[str] = Field(default_factory=list, description="extra stop sequences")
    system_prompt: str | None = Field(
        default=None, description="system message (default: the model manifest's)"
    )

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            seed=self.seed,
            stop=tuple(self.stop),
        )


class ConfidenceSettings(Section):
    scorer: str = Field(
        default="margin", description="raw score of token signals, used when uncalibrated"
    )
    calibrated: bool = Field(
        default=True, description="use the model's calibration (edge-agent calibrate) if any"
    )
    calibration_file: Path | None = Field(
        default=None, description="calibration JSON (default: beside the model's manifest)"
    )
    knowledge_calibration_file: Path | None = Field(
        default=None,
        description="the calibration of answers from local knowledge (default: beside the "
        "model's manifest, <model>.knowledge.calibration.json)",
    )
    probes: Literal["deciding", "always"] = Field(
        default="deciding",
        description="run the calibration's probes only when the confidence decides the "
        "route, or always (to report it)",
    )
    variant: Literal["auto", "full", "cheap"] = Field(
        default="auto",
        description="the calibration's variant: full (three few-shot probes), cheap (one, "
        "sampled three more times), or "
        "auto: cheap on battery or while the board throttles, full otherwise",
    )

    @field_validator("scorer")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in scorer_names():
            raise ValueError(f"unknown scorer {value!r} (known: {', '.join(scorer_names())})")
        return value


def _fingerprints(values: list[str]) -> list[str]:
    normalised = []
    for value in values:
        if not re.fullmatch(r"sha256:[0-9a-fA-F]{64}", value.strip()):
            raise ValueError(f"{value!r} is not sha256:<64 hex digits>")
        normalised.append(value.strip().lower())
    return normalised


Fingerprints = Annotated[list[str], AfterValidator(_fingerprints)]


def _check_broker(broker: BrokerSettings) -> None:
    if broker.address:
        try:
            host, _ = split_host_port(broker.address)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        if broker.plaintext and not is_loopback(host):
            raise ValueError(
                f"plaintext on {broker.address}: plaintext (--dev) is only for a "
                "loopback broker; configure TLS (broker.ca_file) for any other address"
            )
    if (broker.cert_file is None) != (broker.key_file is None):
        raise ValueError("cert_file and key_file go together")
    if broker.plaintext and broker.discover and not broker.address:
        raise ValueError("discovered brokers are only used over TLS: plaintext is for --dev")


class BrokerSettings(Section):
    address: str = Field(
        default="", description="broker HOST:PORT (empty: none, or discovery when enabled)"
    )
    model: str = Field(default="", description="broker model (empty: the broker's default)")
    strategy: str = Field(
        default="",
        description=(
            "a strategy configured on the broker ([[strategies]] in its broker.toml) that "
            "answers escalations instead of one model (empty: none)"
        ),
    )
    max_cost: float = Field(
        default=0.0,
        ge=0,
        description="most an escalation may cost at the broker's prices (0: no limit)",
    )
    token: SecretStr | None = Field(default=None, description="device token")
    token_file: Path | None = Field(default=None, description="file holding the device token")
    device_id: str = Field(default="", description="this device's id, as enrolled")
    ca_file: Path | None = Field(default=None, description="CA bundle that signs the broker")
    cert_file: Path | None = Field(default=None, description="client certificate (mutual TLS)")
    key_file: Path | None = Field(default=None, description="client key (mutual TLS)")
    server_name: str | None = Field(default=None, description="name expected in its cert")
    plaintext: bool = Field(
        default=False,
        description="no TLS and no token (a loopback `cloud-broker serve --dev` only)",
    )
    discover: bool = Field(
        default=False, description="find a broker by zeroconf when address is empty"
    )
    discover_interfaces: list[str] = Field(
        default_factory=list, description="addresses to browse on (empty: all interfaces)"
    )
    discover_timeout_s: float = Field(
        default=2.0, gt=0, le=30, description="how long to browse for a broker"
    )
    enrolled: Fingerprints = Field(
        default_factory=list, description="trusted broker certificates, sha256:<hex>"
    )
    trust_on_first_use: bool = Field(
        default=False, description="pin the first discovered broker's certificate"
    )
    pins_file: Path | None = Field(
        default=None, description="pinned brokers (default: <state dir>/brokers.json)"
    )

    @model_validator(mode="after")
    def _check(self) -> BrokerSettings:
        _check_broker(self)
        return self

    def read_token(self) -> str | None:
        if self.token is not None:
            return self.token.get_secret_value()
        if self.token_file is not None:
            try:
                return self.token_file.read_text().strip() or None
            except OSError as exc:
                raise ConfigError(f"broker.token_file {self.token_file}: {exc.strerror}") from exc
        return None


class EscalationSettings(Section):
    deadline_s: float = Field(
        default=30.0, gt=0, le=600, description="longest wait for a broker answer"
    )
    connect_timeout_s: float = Field(
        default=2.0, gt=0, le=60, description="longest wait for the broker to accept a call"
    )
    retries: int = Field(
        default=1, ge=0, le=5, description="retries before the first answer byte only"
    )
    failure_threshold: int = Field(
        default=3, ge=1, le=100, description="consecutive failures that open the circuit"
    )
    reset_after_s: float = Field(
        default=5.0, gt=0, le=3600, description="first wait before probing an open circuit"
    )
    reset_max_s: float = Field(default=60.0, gt=0, le=86400, description="longest probe wait")
    probe_timeout_s: float = Field(default=1.0, gt=0, le=30, description="health probe limit")

    @model_validator(mode="after")
    def _check(self) -> EscalationSettings:
        if self.reset_max_s < self.reset_after_s:
            raise ValueError(
                f"reset_max_s {self.reset_max_s} is below reset_after_s {self.reset_after_s}"
            )
        return self


class BudgetSettings(Section):
    requests_per_hour: int | None = Field(default=None, ge=0, description="escalations/hour")
    requests_per_day: int | None = Field(default=None, ge=0, description="escalations/day")
    tokens_per_hour: int | None = Field(default=None, ge=0, description="broker tokens/hour")
    tokens_per_day: int | None = Field(default=None, ge=0, description="broker tokens/day")
    state_file: Path | None = Field(
        default=None, description="where spending is kept (default: <state dir>/budget.json)"
    )


class TelemetrySettings(Section):
    sources: list[str] = Field(
        default_factory=lambda: [
            "psutil",
            "power_supply",
            "thermal_zone",
            "jetson",
            "raspberry_pi",
        ],
        description="device sources, in order (later ones override earlier ones)",
    )
    interval_s: float = Field(default=2.0, gt=0, le=3600, description="device sampling period")
    trace: Path | None = Field(
        default=None, description="replay this JSONL/CSV trace instead of the device"
    )
    speed_alpha: float = Field(default=0.3, gt=0, le=1, description="EWMA weight, local speed")
    rtt_alpha: float = Field(default=0.3, gt=0, le=1, description="EWMA weight, broker RTT")


class PolicySettings(Section):
    """tau = q_cloud - (C_cloud - C_local) / value, smoothed and clamped (README: the policy)."""

    mode: Mode = Field(default="auto", description="auto, local (never escalate) or cloud")
    q_cloud: float = Field(default=0.9, ge=0, le=1, description="expected cloud answer quality")
    value: float = Field(default=1.0, gt=0, description="V: worth of an acceptable answer")
    cost_local: float = Field(default=0.0, ge=0, description="base C_local")
    cost_cloud: float = Field(default=0.35, ge=0, description="base C_cloud")
    battery_low_percent: float = Field(
        default=50.0, gt=0, le=100, description="battery level that starts to count, unplugged"
    )
    w_battery: float = Field(
        default=0.4, ge=0, description="C_local added at 0% battery, unplugged"
    )
    w_throttled: float = Field(default=0.2, ge=0, description="C_local added while throttling")
    hot_c: float = Field(default=70.0, description="temperature where heat starts to count")
    critical_c: float = Field(default=90.0, description="temperature of full heat cost")
    w_heat: float = Field(default=0.15, ge=0, description="C_local added at critical_c")
    cpu_busy_above: float = Field(
        default=0.7, ge=0, lt=1, description="CPU load of other processes that starts to count"
    )
    w_cpu: float = Field(default=0.15, ge=0, description="C_local added at 100% CPU")
    slow_tokens_per_s: float = Field(default=5.0, gt=0, description="local speed that is slow")
    w_slow: float = Field(default=0.15, ge=0, description="C_local added at 0 tokens/s")
    rtt_free_s: float = Field(default=0.1, ge=0, description="broker round trip that is free")
    w_rtt: float = Field(default=0.2, ge=0, description="C_cloud added per second of RTT")
    w_budget: float = Field(default=0.2, ge=0, description="C_cloud added as budget runs out")
    tau_min: float = Field(default=0.05, ge=0, le=1, description="lowest τ")
    tau_max: float = Field(default=0.95, ge=0, le=1, description="highest τ")
    ewma_alpha: float = Field(default=0.3, gt=0, le=1, description="weight of a new τ reading")
    hysteresis: float = Field(default=0.03, ge=0, le=0.5, description="τ moves only by more")

    @model_validator(mode="after")
    def _check(self) -> PolicySettings:
        if self.tau_min > self.tau_max:
            raise ValueError(f"tau_min {self.tau_min} is above tau_max {self.tau_max}")
        if self.critical_c <= self.hot_c:
            raise ValueError(f"critical_c {self.critical_c} must be above hot_c {self.hot_c}")
        return self


class TaskHint(Section):
    name: str
    pattern: str = Field(description="case-insensitive regular expression over the prompt")
    penalty: float = Field(ge=0, le=1, description="taken off the predicted confidence")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value


def _default_hints() -> list[TaskHint]:
    return [
        TaskHint(
            name="arithmetic",
            pattern=r"\d{2,}\s*(?:[*x\u00d7/^]|times|divided by|to the power)\s*\d{2,}"
            r"|square root|\bfactori[sz]e\b",
            penalty=0.4,
        ),
        TaskHint(
            name="code",
            pattern=r"\b(?:write|implement|debug|fix)\b.{0,40}"
            r"\b(?:code|function|program|script|class|regex|sql)\b",
            penalty=0.4,
        ),
        TaskHint(
            name="reasoning",
            pattern=r"\bstep by step\b|\bprove\b|\bderive\b|\bwhy does\b",
            penalty=0.3,
        ),
        TaskHint(
            name="long-form",
            pattern=r"\bin detail\b|\bessay\b|\breport\b|\bthorough",
            penalty=0.4,
        ),
        TaskHint(name="translation", pattern=r"\btranslate\b", penalty=0.3),
    ]


class MemorySettings(Section):
    """Pre-route memory: prompts whose local answers were judged right or wrong (from
    ``edge-agent calibrate --remember`` and ``edge-agent feedback``); a new prompt's nearest
    ones move the pre-route's prediction (edge_agent.knowledge.memory,
    edge_agent.routing.preroute). The defaults were chosen by cross-validation on
    ridgeline-qa-v1's train split (benchmarks/preroute_memory.py)."""

    enabled: bool = Field(
        default=False, description="use the memory in pre-route (needs the embedding model built)"
    )
    k: int = Field(default=40, ge=1, le=1000, description="nearest past prompts that count")
    min_similarity: float = Field(
        default=0.0, ge=0, lt=1, description="cosine similarity below which a prompt counts 0"
    )
    prior: float = Field(
        default=1.0, gt=0, description="pseudo-neighbours at the base rate (shrinkage)"
    )
    weight: float = Field(
        default=1.5, ge=0, description="how strongly the memory moves the rule prediction"
    )
    min_outcomes: int = Field(
        default=20, ge=1, description="outcomes a model needs before its memory is used"
    )
    max_entries: int = Field(default=5000, ge=1, description="the oldest outcomes go first")
    path: Path | None = Field(
        default=None, description="its JSONL file (default: <state dir>/outcome-memory.jsonl)"
    )


class PreRouteSettings(Section):
    enabled: bool = Field(default=True, description="skip the local model for hopeless prompts")
    base: float = Field(default=0.7, ge=0, le=1, description="predicted confidence, plain prompt")
    long_chars: int = Field(default=400, ge=1, description="prompt length that starts to count")
    per_1000_chars: float = Field(default=0.15, ge=0, description="taken off per 1000 chars more")
    skip_margin: float = Field(
        default=0.2, ge=0, le=1, description="skip local when prediction < tau - this"
    )
    hints: list[TaskHint] = Field(default_factory=_default_hints)
    memory: MemorySettings = Field(default_factory=MemorySettings)


class EmbeddingSettings(Section):
    """The sentence encoder behind specialists, the answer cache and pre-route memory."""

    model: str = Field(
        default="all-minilm-l6-v2", description="embedding model (run `models build` first)"
    )
    variant: Literal["fp32", "int8"] | None = Field(
        default=None, description="built variant to load (default: the manifest's, int8)"
    )
    threads: int | None = Field(
        default=None, ge=1, description="ONNX Runtime threads (default: physical cores)"
    )


class CacheSettings(Section):
    """The semantic answer cache: a prompt close enough to an earlier one gets its answer."""

    enabled: bool = Field(default=False, description="answer from and store to the cache")
    path: Path | None = Field(
        default=None, description="its SQLite file (default: <state dir>/answer-cache.sqlite)"
    )
    similarity: float = Field(
        default=0.9, gt=0, le=1, description="cosine similarity a cached prompt needs"
    )
    ttl_s: float = Field(default=7 * 86400, gt=0, description="how long an answer stays valid")
    max_entries: int = Field(default=10_000, ge=1, description="oldest-used entries go first")
    store: Literal["escalated", "all"] = Field(
        default="escalated",
        description="escalated: cache broker answers only (the expensive ones); all: local too",
    )


class SpecialistSettings(Section):
    dir: Path | None = Field(
        default=None,
        description="where trained specialists live (default: <state dir>/specialists)",
    )
    threshold: float | None = Field(
        default=None, ge=0, le=1,
        description="escalate below this probability (default: the one chosen at training)",
    )  # fmt: skip


Escalate = Literal["never", "question-only", "redacted", "allowed"]


class KnowledgeSettings(Section):
    """Local knowledge: collections of documents ("memory experts") the local model answers
    from, and what of them may leave the device (edge_agent.knowledge.library)."""

    dir: Path | None = Field(
        default=None, description="where collections live (default: <state dir>/knowledge)"
    )
    escalate: Escalate = Field(
        default="question-only",
        description=(
            "what an escalation may send, for collections without their own setting: never "
            "(answer locally), question-only (no retrieved text), redacted (personal data "
            "removed), allowed"
        ),
    )
    redact_names: list[str] = Field(
        default_factory=list, description="names the redacted setting also removes"
    )
    experts: int = Field(default=1, ge=1, le=16, description="collections chosen per question")
    passages: int = Field(
        default=5, ge=1, le=16,
        description="retrieved chunks in the prompt (benchmarks/knowledge.py: of 2-5, 5 is the "
        "most accurate for SmolLM2)",
    )  # fmt: skip
    min_similarity: float = Field(
        default=0.2, ge=-1, lt=1, description="a chunk less similar to the question is not used"
    )
    profile_weight: float = Field(
        default=0.25, ge=0, le=4,
        description="how much a collection's profile (its subject) adds to its expert score "
        "(benchmarks/knowledge.py chooses 0.25 on knowledge-v1 train)",
    )  # fmt: skip
    judged_weight: float = Field(
        default=0.5, ge=0, le=4,
        description="how much its judged answers to similar questions (feedback, the broker's "
        "verdicts) move its expert score (0.5: chosen by leave-one-out on knowledge-v1 train)",
    )  # fmt: skip
    chunk_chars: int = Field(
        default=700, ge=200, le=8000, description="longest chunk, in characters"
    )
    max_file_bytes: int = Field(
        default=16 << 20, ge=1, description="larger source files are refused"
    )


class AbortSettings(Section):
    enabled: bool = Field(default=True, description="stop a local answer early when it goes badly")
    min_tokens: int = Field(default=8, ge=1, description="tokens before the first check")
    margin: float = Field(
        default=0.25, ge=0, le=1, description="abort when running confidence < tau - this"
    )


def _default_grpc() -> str:
    with warnings.catch_warnings():  # no XDG_RUNTIME_DIR (no login session): /tmp/runtime-UID
        warnings.simplefilter("ignore")
        runtime_dir = platformdirs.user_runtime_dir("ridgeline")
    return f"unix:{Path(runtime_dir) / 'edge.sock'}"


def grpc_target(value: str) -> tuple[str, Path | None]:
    """``unix:PATH`` or ``HOST:PORT`` to (gRPC target, socket path or None)."""
    if value.startswith("unix:"):
        path = Path(value[len("unix:") :]).expanduser()
        if not path.is_absolute():
            raise ConfigError(f"{value!r}: the socket path must be absolute (unix:/path)")
        return f"unix:{path}", path
    split_host_port(value)
    return value, None


def _host_port_or_empty(value: str) -> str:
    if value:
        try:
            split_host_port(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    return value


def _grpc_target_or_empty(value: str) -> str:
    if value:
        try:
            grpc_target(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    return value


HostPortOrNone = Annotated[str, AfterValidator(_host_port_or_empty)]  # "" is none
GrpcTargetOrNone = Annotated[str, AfterValidator(_grpc_target_or_empty)]


class DaemonSettings(Section):
    """``edge-agent serve``: where it listens, who may call it, how much it takes on."""

    http: HostPortOrNone = Field(
        default="127.0.0.1:8177",
        description="OpenAI-compatible HTTP API HOST:PORT (empty: none; port 0 picks one)",
    )
    grpc: GrpcTargetOrNone = Field(
        default_factory=_default_grpc,
        description="gRPC edge service, unix:PATH or HOST:PORT (empty: none)",
    )
    api_key: SecretStr | None = Field(
        default=None, description="key clients send as 'Authorization: Bearer KEY'"
    )
    api_key_file: Path | None = Field(default=None, description="file holding the API key")
    slots: int = Field(
        default=1, ge=1, le=64, description="requests answered at once (model copies per model)"
    )
    queue: int = Field(
        default=8, ge=0, le=4096, description="requests waiting beyond the slots (then 503)"
    )
    idle_unload_s: float = Field(
        default=300.0, ge=0, description="unload a model unused this long (0: never)"
    )
    drain_s: float = Field(
        default=30.0, ge=0, le=3600, description="on SIGTERM, how long running requests may finish"
    )
    max_request_bytes: int = Field(
        default=1 << 20, ge=1024, le=64 << 20, description="largest HTTP request body"
    )
    write_stall_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="a streamed answer's client that takes no data this long is cut off "
        "and its generation cancelled (frees the slot)",
    )

    def read_api_key(self) -> str | None:
        if self.api_key is not None:
            return self.api_key.get_secret_value() or None
        if self.api_key_file is not None:
            try:
                return self.api_key_file.read_text().strip() or None
            except OSError as exc:
                raise ConfigError(
                    f"daemon.api_key_file {self.api_key_file}: {exc.strerror}"
                ) from exc
        return None

    def public_binds(self) -> list[str]:
        """The addresses this daemon would serve beyond this machine."""
        public = []
        if self.http and not is_loopback(split_host_port(self.http)[0]):
            public.append(f"http {self.http}")
        grpc_tcp = self.grpc and not self.grpc.startswith("unix:")
        if grpc_tcp and not is_loopback(split_host_port(self.grpc)[0]):
            public.append(f"grpc {self.grpc}")
        return public


class EdgeSettings(Section):
    models: ModelsSettings = Field(default_factory=ModelsSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    confidence: ConfidenceSettings = Field(default_factory=ConfidenceSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    escalation: EscalationSettings = Field(default_factory=EscalationSettings)
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    preroute: PreRouteSettings = Field(default_factory=PreRouteSettings)
    abort: AbortSettings = Field(default_factory=AbortSettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    embeddings: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    specialists: SpecialistSettings = Field(default_factory=SpecialistSettings)
    knowledge: KnowledgeSettings = Field(default_factory=KnowledgeSettings)


load_edge_settings = settings_loader(EdgeSettings, env_prefix=ENV_PREFIX, file_name="edge.toml")
