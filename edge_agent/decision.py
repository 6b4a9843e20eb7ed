"""The decision record every answer carries: which path ran, why, and what it cost.

``path`` is one of

- ``local``: the local answer was good enough (confidence ≥ τ), or escalation was not an
  option (mode ``local``, no broker configured, budget spent);
- ``cloud``: the broker answered, after the local model ran (confidence below τ, or an early
  abort) or because the mode is ``cloud``;
- ``skipped-local``: pre-route judged the prompt too hard for the local model, so it never
  ran and the broker answered;
- ``local-degraded``: the answer should have come from the broker, but the broker failed,
  was unreachable, missed the deadline or its circuit is open: this is the local answer;
- ``cache``: the semantic answer cache held an answer to a prompt similar enough (see
  ``cache`` in the record): neither model ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Literal

__all__ = [
    "AbortInfo",
    "BrokerInfo",
    "CacheInfo",
    "ConfidenceInfo",
    "Decision",
    "KnowledgeInfo",
    "Path",
    "PreRouteInfo",
    "StageTimings",
]

Path = Literal["local", "cloud", "skipped-local", "local-degraded", "cache"]


@dataclass(frozen=True)
class StageTimings:
    decide_ms: float  # telemetry snapshot + threshold policy
    preroute_ms: float | None
    local_ms: float | None  # local generation (all runs of it) and confidence probes
    broker_ms: float | None  # escalation, when a call went out
    total_ms: float
    cache_ms: float | None = None  # embedding the prompt and looking it up, when the cache is on
    knowledge_ms: float | None = None  # retrieving passages, when the request asked for knowledge


@dataclass(frozen=True)
class CacheInfo:
    """Where a cached answer came from."""

    similarity: float  # cosine similarity of the prompt to the cached one
    threshold: float  # the similarity a hit needs (cache.similarity)
    age_s: float
    prompt: str  # the cached prompt
    source: str  # the path that first answered it (cloud, local, ...)


@dataclass(frozen=True)
class PreRouteInfo:
    predicted: float
    hints: list[str]
    skipped_local: bool
    # With the outcome memory (preroute.memory): the rules' own prediction, the memory's
    # P(right) from similar past prompts, its support (neighbours' worth of evidence) and
    # how many past prompts counted. None when the memory had no estimate.
    rules: float | None = None
    memory: float | None = None
    memory_support: float | None = None
    memory_neighbours: int | None = None


@dataclass(frozen=True)
class ConfidenceInfo:
    """How an answer's confidence was computed (part of the decision record)."""

    calibrated: bool  # True: a probability from the model's calibration
    method: str  # the calibrator kind, or the raw scorer's name
    raw: float  # the raw scorer's value, for comparison
    probes_ms: float | None  # model time the probes took, when any ran
    note: str | None = None  # why the raw score was used, when it was
    variant: str | None = None  # the calibration's variant (full, cheap) and why it was chosen


@dataclass(frozen=True)
class AbortInfo:
    at_token: int
    running_confidence: float
    limit: float  # the running confidence had to stay above this


@dataclass(frozen=True)
class BrokerInfo:
    address: str
    model: str | None = None  # the model that answered
    models_used: list[str] = field(default_factory=list)
    attempts: int = 0
    rtt_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    circuit: str = "closed"
    strategy: str | None = None  # how the broker answered: single, route, cascade, ensemble
    strategy_name: str | None = None  # the configured strategy's name
    members: list[dict[str, Any]] = field(default_factory=list)  # who ran, what each cost
    cost: float | None = None  # at the broker's prices
    draft_verdict: dict[str, Any] | None = None  # the broker's judgement of the local draft
    verdict_recorded: bool = False  # kept in the outcome memory as a judged outcome
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class KnowledgeInfo:
    """The local knowledge a request drew on, and what of it the broker was sent."""

    collections: list[dict[str, Any]]  # each candidate's name, score, whether chosen, setting
    citations: list[dict[str, Any]]  # the passages in the prompt: [n] collection source chunk
    escalate: str | None  # the privacy setting that held (None: nothing was retrieved)
    escalate_from: str  # the collections it comes from
    sent: str | None  # what the broker was sent, in words (None: nothing went)
    withheld: list[str] = field(default_factory=list)
    redacted: dict[str, int] = field(default_factory=dict)  # personal data taken out, by kind
    retrieval_ms: float = 0.0
    skipped: list[str] = field(default_factory=list)  # collections that could not be searched
    adapter: str | None = None  # the chosen collection's LoRA adapter, when the answer used it


@dataclass(frozen=True)
class Decision:
    path: Path
    mode: str
    reason: str
    confidence: float | None
    confidence_info: ConfidenceInfo | None  # when the local model ran
    threshold: float
    threshold_raw: float
    threshold_reason: str  # the telemetry that moved τ, in words
    threshold_terms: list[dict[str, Any]]  # name, side, delta, why
    telemetry: dict[str, Any]  # the snapshot's values
    telemetry_sources: list[str]
    gate: str | None  # why escalation was not allowed, if it was not
    preroute: PreRouteInfo | None
    aborted: AbortInfo | None
    broker: BrokerInfo | None
    timings: StageTimings
    cache: CacheInfo | None = None
    knowledge: KnowledgeInfo | None = None
    local_threads: int | None = None  # threads the local model used (runtime.adaptive_threads)

    def to_dict(self) -> dict[str, Any]:
        return plain(self)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        """The record :meth:`to_dict` wrote (a daemon's answer, read by a client)."""
        fields = known_fields(cls, data)
        for key, kind in _PARTS.items():
            if fields.get(key) is not None:
                fields[key] = kind(**known_fields(kind, fields[key]))
        fields["timings"] = StageTimings(**known_fields(StageTimings, fields["timings"]))
        return cls(**fields)


def plain(value: Any) -> Any:
    """``dataclasses.asdict`` without its deep copies: JSON-ready dicts and lists of the
    record's values. A daemon serialises one record per answer, so this is on its hot
    path, and asdict deep-copies every leaf)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def known_fields(kind: Any, data: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``data`` that ``kind`` (a dataclass) has fields for: a newer daemon
    may send more, and an older client keeps working."""
    names = {f.name for f in fields(kind)}
    return {key: value for key, value in data.items() if key in names}


_PARTS: dict[str, Any] = {
    "confidence_info": ConfidenceInfo,
    "preroute": PreRouteInfo,
    "aborted": AbortInfo,
    "broker": BrokerInfo,
    "cache": CacheInfo,
    "knowledge": KnowledgeInfo,
}
