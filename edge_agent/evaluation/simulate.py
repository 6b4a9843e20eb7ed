"""Replay a telemetry trace over a list of prompts and record what the agent decides.

Each trace row is one step: the telemetry snapshot becomes that row, the next prompt (the
list repeats) goes through the real pipeline with the real local model, and the step
records τ, the local confidence and the path taken. The broker is a dry run: an escalation
is recorded, never sent, so a simulation needs no network and spends no budget; broker
availability, round trip and budget come from the trace.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ridgeline_core.cancel import CancelToken
from ridgeline_core.errors import InvalidRequestError, MissingDependencyError
from ridgeline_core.runtime import ChatMessage, SamplingParams

from ..agent import EdgeAgent
from ..link.answers import BrokerVia
from ..link.circuit import CircuitBreaker
from ..link.escalation import CloudAnswer, Draft, drain
from ..settings import BudgetSettings, EdgeSettings
from ..telemetry import StepReplaySource, TelemetrySampler, TelemetryTrace

__all__ = ["DryRunBroker", "SimulationStep", "load_prompts", "plot", "simulate", "write_csv"]

MAX_PROMPTS = 10_000

# Colours and markers per path, in the plot and its legend.
_PATH_STYLE = {
    "local": ("tab:green", "o"),
    "cloud": ("tab:orange", "^"),
    "skipped-local": ("tab:red", "s"),
    "local-degraded": ("tab:gray", "x"),
}


@dataclass(frozen=True)
class SimulationStep:
    t: float
    prompt: str
    threshold: float
    threshold_raw: float
    confidence: float | None
    path: str
    reason: str


class DryRunBroker:
    """A broker link that answers every escalation at once with nothing: the decision is
    what a simulation is about."""

    address = "dry-run"

    def __init__(self) -> None:
        self.circuit = CircuitBreaker(1_000_000, 1.0, 1.0)

    def available(self) -> tuple[bool, str]:
        return True, "closed"

    def stream(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        *,
        draft: Draft | None,
        deadline_s: float,
        cancel: CancelToken | None = None,
        via: BrokerVia | None = None,
    ) -> Generator[str, None, CloudAnswer]:
        return CloudAnswer("", "(broker)", (), "stop", 0, 0, None, None, 0.0, 1)
        yield  # a generator that answers at once  # pragma: no cover

    def escalate(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        *,
        draft: Draft | None,
        deadline_s: float,
        cancel: CancelToken | None = None,
        via: BrokerVia | None = None,
    ) -> CloudAnswer:
        return drain(self.stream(messages, params, draft=draft, deadline_s=deadline_s))

    def probe(self) -> bool:
        return True

    def close(self) -> None:
        pass


def load_prompts(path: Path) -> list[str]:
    """One prompt per line (blank lines and lines starting with # are skipped), or a JSONL
    file of {"prompt": ...} objects."""
    import json

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidRequestError(f"prompts file {path}: {exc.strerror}") from exc
    prompts = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            try:
                prompt = json.loads(line)["prompt"]
            except (ValueError, KeyError, TypeError) as exc:
                raise InvalidRequestError(
                    f'{path}:{number}: expected {{"prompt": "..."}} ({exc})'
                ) from exc
            if not isinstance(prompt, str):
                raise InvalidRequestError(f"{path}:{number}: prompt is not a string")
            line = prompt
        prompts.append(line)
    if not prompts:
        raise InvalidRequestError(f"prompts file {path} has no prompts")
    if len(prompts) > MAX_PROMPTS:
        raise InvalidRequestError(f"prompts file {path}: more than {MAX_PROMPTS} prompts")
    return prompts


def simulate(
    settings: EdgeSettings,
    trace_path: Path,
    prompts: Sequence[str],
    *,
    max_tokens: int | None = None,
    on_step: Callable[[int, int, SimulationStep], None] | None = None,
) -> list[SimulationStep]:
    trace = TelemetryTrace.load(trace_path)
    source = StepReplaySource(trace)
    sampler = TelemetrySampler([], overrides=source)
    # Budget and broker come from the trace; the device's own budget file is left alone.
    quiet = settings.model_copy(update={"budget": BudgetSettings()})
    steps: list[SimulationStep] = []
    with EdgeAgent(quiet, sampler=sampler, broker=DryRunBroker(), background=False) as agent:
        for index, (t, _) in enumerate(trace.rows):
            if index:
                source.advance()
            sampler.refresh()
            prompt = prompts[index % len(prompts)]
            answer = agent.ask(prompt, max_tokens=max_tokens)
            step = SimulationStep(
                t=t,
                prompt=prompt,
                threshold=answer.threshold,
                threshold_raw=answer.decision.threshold_raw,
                confidence=answer.confidence,
                path=answer.source,
                reason=answer.decision.reason,
            )
            steps.append(step)
            if on_step is not None:
                on_step(index, len(trace.rows), step)
    return steps


def write_csv(steps: Sequence[SimulationStep], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(SimulationStep.__dataclass_fields__))
        writer.writeheader()
        for step in steps:
            writer.writerow(asdict(step))


def plot(steps: Sequence[SimulationStep], trace_path: Path, path: Path) -> None:
    """τ, raw τ and each step's confidence coloured by path (top); the trace (bottom)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError.for_module("matplotlib", "plot") from None
    trace = TelemetryTrace.load(trace_path)
    t = [step.t for step in steps]
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(10, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    top.step(t, [s.threshold for s in steps], where="post", color="black", label="τ")
    top.plot(t, [s.threshold_raw for s in steps], ":", color="gray", label="τ before smoothing")
    for name, (colour, marker) in _PATH_STYLE.items():
        points = [(s.t, s.confidence if s.confidence is not None else s.threshold)
                  for s in steps if s.path == name]  # fmt: skip
        if points:
            xs, ys = zip(*points, strict=True)
            top.scatter(xs, ys, color=colour, marker=marker, label=name, zorder=3)
    top.set_ylim(0, 1)
    top.set_ylabel("confidence / τ")
    top.legend(loc="upper left", fontsize="small", ncol=3)
    top.set_title(f"{trace_path.name}: {len(steps)} steps, " + _counts(steps))
    # Broker outages are shaded on both panels; the other fields are lines.
    times = [row_t for row_t, _ in trace.rows]
    for index, (row_t, row) in enumerate(trace.rows):
        if row.get("broker_available") is False:
            end = times[index + 1] if index + 1 < len(times) else row_t + 1
            for axes in (top, bottom):
                axes.axvspan(row_t, end, color="0.85", zorder=0, linewidth=0)
    if any(row.get("broker_available") is False for _, row in trace.rows):
        bottom.plot([], [], color="0.85", linewidth=8, label="broker down")
    fields = sorted({key for _, row in trace.rows for key in row} - {"broker_available"})
    for field in fields:
        values = [row.get(field) for _, row in trace.rows]
        numeric = [float(v) if v is not None else float("nan") for v in values]
        scale = 100.0 if field == "battery_percent" else 1.0
        label = f"{field} / 100" if scale != 1.0 else field
        bottom.step(times, [v / scale for v in numeric], where="post", label=label)
    bottom.set_xlabel("trace time (s)")
    bottom.set_ylabel("telemetry")
    if bottom.get_legend_handles_labels()[0]:
        bottom.legend(loc="upper left", fontsize="small", ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _counts(steps: Sequence[SimulationStep]) -> str:
    counts: dict[str, int] = {}
    for step in steps:
        counts[step.path] = counts.get(step.path, 0) + 1
    return ", ".join(f"{name} {n}" for name, n in counts.items())
