"""Run the local model over a question set: what ``calibrate`` and ``eval`` are made of.

``observe`` answers every question the way the agent does (same chat prompt, same
runtime), keeps the evidence (token signals, probes) and judges each answer with the
matcher. ``compare_methods`` fits each calibration method on folds of the observations
and scores it out of fold (or on a held-out set), ``fit`` fits the chosen one on
everything, and ``evaluate`` turns observations into the routing numbers of
``edge_agent.evaluation.metrics.summarise``. Plots need the ``plot`` extra (matplotlib).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ridgeline_core.errors import InvalidRequestError, MissingDependencyError
from ridgeline_core.progress import NULL_PROGRESS, Progress
from ridgeline_core.runtime import Runtime, SamplingParams

from ..agent import chat_messages, run_local
from ..confidence.calibrated import ConfidenceModel, ModelConfidence, running_score
from ..confidence.features import (
    FEATURES,
    SHORT_PROBES,
    Evidence,
    feature_values,
    probes_for,
    run_probes,
)
from ..confidence.variants import Variant
from ..knowledge.library import Retrieval, with_passages
from ..request.knowledge_stage import retrieval_evidence
from .calibration import CALIBRATORS, Calibrator, LogisticCalibrator, PlattCalibrator
from .dataset import QAItem
from .matcher import is_correct
from .metrics import auroc, brier, coverage_accuracy, ece, summarise

__all__ = [
    "CHEAP_FEATURES",
    "DEFAULT_FEATURES",
    "FAST_FEATURES",
    "KNOWLEDGE_FEATURES",
    "METHODS",
    "Method",
    "MethodReport",
    "Observation",
    "compare_methods",
    "coverage_points",
    "evaluate",
    "fit",
    "methods_for",
    "observe",
    "plot_calibration",
]


def _group(name: str) -> tuple[str, ...]:
    return tuple(f for f, feature in FEATURES.items() if feature.group == name)


# The learned combinations' features, chosen by measurement on the train split
# (benchmarks/confidence.py; README "How confidence is computed").
FAST_FEATURES: tuple[str, ...] = _group("span") + _group("probe") + _group("prompt")
# three frames, the first also sampled twice; the cheap variant beside it: the first alone
DEFAULT_FEATURES: tuple[str, ...] = FAST_FEATURES + _group("consistency") + _group("sampled")
CHEAP_FEATURES: tuple[str, ...] = FAST_FEATURES + _group("sampled")
# Answers from local knowledge: no probe (a few-shot probe without the passages cannot
# know what the passages say), the answer span, the question, and how retrieval went.
KNOWLEDGE_FEATURES: tuple[str, ...] = _group("span") + _group("prompt") + _group("retrieval")
LOGISTIC_L2 = 10.0  # strong enough for ~300 labelled answers and ~30 features


@dataclass(frozen=True)
class Method:
    """One way to calibrate: a calibrator kind over some features."""

    name: str
    kind: str  # isotonic, platt (one feature) or logistic
    features: tuple[str, ...]
    description: str

    def make(self) -> Calibrator:
        if self.kind == "logistic":
            return LogisticCalibrator(l2=LOGISTIC_L2)
        return CALIBRATORS[self.kind]()

    def shape(self, x: np.ndarray) -> np.ndarray:
        return x if self.kind == "logistic" else x[:, 0]


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("isotonic", "isotonic", ("margin",), "isotonic regression of the mean margin"),
        Method("platt", "platt", ("margin",), "Platt scaling of the mean margin"),
        Method(
            "logistic-fast",
            "logistic",
            FAST_FEATURES,
            "answer span, one short probe and prompt features",
        ),
        Method(
            "logistic-cheap",
            "logistic",
            CHEAP_FEATURES,
            "answer span, one short probe sampled twice more and prompt features",
        ),
        Method(
            "logistic",
            "logistic",
            DEFAULT_FEATURES,
            "answer span, three short probes (the first sampled twice more), prompt features",
        ),
        Method(
            "logistic-knowledge",
            "logistic",
            KNOWLEDGE_FEATURES,
            "answer span, prompt and retrieval features (answers from local knowledge)",
        ),
    )
}


def methods_for(knowledge: bool) -> list[Method]:
    """The methods worth comparing: the retrieval features say nothing without knowledge,
    and the short probes little with it (SmolLM2 on datasets/knowledge-v1)."""
    if knowledge:
        return [m for m in METHODS.values() if not probes_for(m.features)]
    return [m for m in METHODS.values() if m.name != "logistic-knowledge"]


@dataclass(frozen=True)
class Observation:
    item: QAItem
    text: str
    correct: bool
    evidence: Evidence
    seconds: dict[str, float]  # "answer" and each probe that ran


def _probed(
    runtime: Runtime, evidence: Evidence, probes: set[str], seconds: dict[str, float]
) -> Evidence:
    """``evidence`` with ``probes`` run, their time in ``seconds``: the short probes run
    in one batch, so each is given an equal share of its time."""
    shorts = probes & {*SHORT_PROBES, "samples"}  # one batch
    if shorts:
        evidence = run_probes(runtime, evidence, shorts)
        for probe in shorts:
            answer = evidence.samples[0] if probe == "samples" else evidence.shorts[probe]
            seconds[probe] = answer.seconds / len(shorts)
    for probe in sorted(probes - shorts):
        started = time.perf_counter()
        evidence = run_probes(runtime, evidence, {probe})
        seconds[probe] = time.perf_counter() - started
    return evidence


def observe(
    runtime: Runtime,
    items: Sequence[QAItem],
    *,
    system_prompt: str | None,
    params: SamplingParams,
    probes: set[str],
    progress: Progress = NULL_PROGRESS,
    knowledge: Callable[[QAItem], Retrieval] | None = None,
) -> list[Observation]:
    """Answer each item with the agent's chat prompt and gather the evidence; with
    ``knowledge``, from the passages it retrieves for the item, as the agent does."""
    observations = []
    progress.start(f"answering {len(items)} questions with {runtime.manifest.name}", len(items))
    try:
        for item in items:
            started = time.perf_counter()
            messages = chat_messages(item.prompt, system_prompt)
            found = None if knowledge is None else knowledge(item)
            if found is not None:
                messages = with_passages(messages, found.passages)
            run = run_local(runtime, messages, params)
            seconds = {"answer": time.perf_counter() - started}
            retrieved = None if found is None else retrieval_evidence(found)
            evidence = run.evidence(item.prompt, retrieved)
            evidence = _probed(runtime, evidence, probes, seconds)
            correct = is_correct(run.text, item.answers) if item.judged is None else item.judged
            observations.append(Observation(item, run.text, correct, evidence, seconds))
            progress.advance(1)
    finally:
        progress.finish()
    return observations


def probes_needed(methods: Sequence[Method]) -> set[str]:
    return set().union(*(probes_for(m.features) for m in methods))


def features_of(observations: Sequence[Observation], names: Sequence[str]) -> np.ndarray:
    return np.asarray([feature_values(o.evidence, names) for o in observations], dtype=float)


def labels_of(observations: Sequence[Observation]) -> np.ndarray:
    return np.asarray([o.correct for o in observations], dtype=bool)


def _predict(method: Method, calibrator: Calibrator, x: np.ndarray) -> np.ndarray:
    return np.clip(calibrator.predict(method.shape(x)), 0.0, 1.0)


def _fit(method: Method, x: np.ndarray, y: np.ndarray) -> Calibrator:
    return method.make().fit(method.shape(x), y)


@dataclass
class MethodReport:
    """How one method did on data it was not fitted on."""

    method: str
    features: tuple[str, ...]
    how: str  # "5-fold cross-validation" or "held-out FILE"
    probs: np.ndarray
    labels: np.ndarray
    auroc: float
    ece: float
    brier: float
    seconds: float  # mean model time per answer for this method's evidence
    coverage: list[tuple[float, float]] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "auroc": self.auroc,
            "ece": self.ece,
            "brier": self.brier,
            "seconds_per_answer": self.seconds,
            "accuracy_at_coverage": {
                f"{c:.0%}": a for c, a in coverage_points(self.coverage, (0.2, 0.4, 0.6, 0.8, 1))
            },
            "evaluated_by": self.how,
        }


def coverage_points(
    curve: Sequence[tuple[float, float]], points: Sequence[float]
) -> list[tuple[float, float]]:
    out = []
    for target in points:
        accuracy = next((a for c, a in curve if c >= target - 1e-9), curve[-1][1])
        out.append((target, accuracy))
    return out


def _report(
    method: Method, probs: np.ndarray, y: np.ndarray, how: str, seconds: float
) -> MethodReport:
    both = 0 < y.sum() < y.size
    return MethodReport(
        method.name,
        method.features,
        how,
        probs,
        y,
        auroc(probs, y) if both else math.nan,
        ece(probs, y),
        brier(probs, y),
        seconds,
        coverage_accuracy(probs, y),
    )


def _seconds(observations: Sequence[Observation], method: Method) -> float:
    probes = probes_for(method.features)
    total = sum(o.seconds["answer"] + sum(o.seconds.get(p, 0.0) for p in probes)
                for o in observations)  # fmt: skip
    return total / len(observations)


def compare_methods(
    observations: Sequence[Observation],
    methods: Sequence[Method],
    *,
    heldout: Sequence[Observation] | None = None,
    folds: int = 5,
    seed: int = 0,
) -> list[MethodReport]:
    """Each method scored on data it was not fitted on: ``heldout`` when given, else
    out-of-fold predictions of ``folds``-fold cross-validation."""
    y = labels_of(observations)
    if y.all() or not y.any():
        raise InvalidRequestError(
            "every answer was right (or every one wrong): calibration needs both; "
            "use a larger or more varied question set"
        )
    reports = []
    for method in methods:
        x = features_of(observations, method.features)
        if heldout is not None:
            calibrator = _fit(method, x, y)
            probs = _predict(method, calibrator, features_of(heldout, method.features))
            yh = labels_of(heldout)
            reports.append(
                _report(method, probs, yh, "scored on a held-out set", _seconds(heldout, method))
            )
            continue
        k = max(2, min(folds, int(min(y.sum(), (~y).sum()))))
        order = np.random.default_rng(seed).permutation(len(y))
        probs = np.zeros(len(y))
        for fold in range(k):
            test = order[fold::k]
            train = np.setdiff1d(order, test)
            probs[test] = _predict(method, _fit(method, x[train], y[train]), x[test])
        how = f"{k}-fold cross-validation"
        reports.append(_report(method, probs, y, how, _seconds(observations, method)))
    return reports


def fit(
    observations: Sequence[Observation],
    method: Method,
    *,
    model: str,
    prompt_style: str,
    info: dict[str, Any],
    cheap: MethodReport | None = None,
) -> ConfidenceModel:
    """The method fitted on every observation, with the streaming (early-abort) calibration
    and, given ``cheap`` (how a method with fewer probes did), that method fitted as the
    cheap variant."""
    y = labels_of(observations)
    calibrator = _fit(method, features_of(observations, method.features), y)
    running = PlattCalibrator().fit(
        np.asarray([running_score(o.evidence.signals) for o in observations]), y
    )
    variant = None
    if cheap is not None:
        fewer = METHODS[cheap.method]
        fitted = _fit(fewer, features_of(observations, fewer.features), y)
        variant = Variant(fewer.features, fitted, cheap.row())
    return ConfidenceModel(
        model, method.features, calibrator, running, prompt_style, info, cheap=variant
    )


def cheap_method(chosen: str, reports: Sequence[MethodReport]) -> MethodReport | None:
    """The method fitted as the cheap variant of ``chosen``: ``logistic-cheap`` (one frame
    and its samples) beside ``logistic`` (three frames), when it was compared."""
    if chosen != "logistic":
        return None
    return next((r for r in reports if r.method == "logistic-cheap"), None)


def evaluate(
    observations: Sequence[Observation],
    confidence: ModelConfidence,
    runtime: Runtime,
    strong_correct: Sequence[bool],
    threshold: float,
    variant: str = "full",
) -> dict[str, Any]:
    """The routing numbers of the agent's confidence (its ``variant``) over ``observations``.

    The agent keeps an answer when its confidence ≥ ``threshold``; everything else goes to
    the strong side. Probes the calibration needs that ``observe`` did not run are run now.
    """
    probs = np.asarray(
        [confidence.score(runtime, o.evidence, variant).confidence for o in observations],
        dtype=float,
    )
    local = labels_of(observations)
    result = summarise(probs, np.clip(probs, 0.0, 1.0), local, list(strong_correct), threshold)
    result["threshold"] = threshold
    return result


def plot_calibration(reports: Sequence[MethodReport], path: Path, title: str) -> None:
    """Reliability diagram (left) and accuracy against coverage (right), one line a method."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError.for_module("matplotlib", "plot") from None
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6))
    left.plot([0, 1], [0, 1], ":", color="gray", label="perfect")
    bins = np.linspace(0, 1, 11)
    for report in reports:
        index = np.minimum((report.probs * 10).astype(int), 9)
        xs, ys = [], []
        for b in range(10):
            chosen = index == b
            if chosen.sum() >= 3:
                xs.append(report.probs[chosen].mean())
                ys.append(report.labels[chosen].mean())
        label = f"{report.method} (ECE {report.ece:.3f})"
        left.plot(xs, ys, "o-", label=label)
        coverage, accuracy = zip(*report.coverage, strict=True)
        right.plot(coverage, accuracy, label=f"{report.method} (AUROC {report.auroc:.3f})")
    left.set_xticks(bins[::2])
    left.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted P(correct)", ylabel="observed accuracy")
    left.set_title("reliability")
    left.legend(fontsize="small")
    base = float(reports[0].labels.mean()) if reports else 0.0
    right.axhline(base, color="gray", linestyle=":", label=f"answer all ({base:.2f})")
    right.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="coverage (answered locally)")
    right.set_ylabel("accuracy of the answered")
    right.set_title("coverage / accuracy")
    right.legend(fontsize="small")
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
